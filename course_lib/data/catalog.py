"""The real datasets of the full profile at a glance: loader, label convention, folder, fetch command."""
from __future__ import annotations

import os
from dataclasses import dataclass

from .folders import fetch_command, resolve_root


@dataclass(frozen=True)
class DatasetInfo:
    """One real dataset: how the course loads it and where it comes from."""

    name: str
    loader: str
    classes: str
    labels: str
    folder: str  # relative to COURSE_DATA
    script: str  # key of folders.DATA_SCRIPT_COMMANDS
    used_by: str
    fields: tuple[tuple[str, str], ...] = ()


DATASETS: tuple[DatasetInfo, ...] = (
    DatasetInfo("CocoStuff-27", "CocoStuff27", "27 (12 things + 15 stuff)",
                "stuffthing PNG 0..181 → 27 coarse, 255 → ignore; curated IIC lists",
                "cocostuff", "cocostuff", "STEGO"),
    DatasetInfo("Cityscapes-27", "Cityscapes27", "27", "labelIds 7..33 → 0..26, ids < 7 → ignore",
                "cityscapes", "cityscapes", "STEGO"),
    DatasetInfo("ImageNet-S50", "ImageNetS(subset=50)", "50 + other",
                "RGB PNG id = R + 256·G (int32); 0 other, 1000 → ignore",
                "ImageNetS/ImageNetS50", "imagenet_s", "PASS", (("subset", "50"),)),
    DatasetInfo("ImageNet-S300", "ImageNetS(subset=300)", "300 + other", "as ImageNet-S50",
                "ImageNetS/ImageNetS300", "imagenet_s", "PASS", (("subset", "300"),)),
    DatasetInfo("ImageNet-S919", "ImageNetS(subset=919)", "919 + other", "as ImageNet-S50",
                "ImageNetS/ImageNetS919", "imagenet_s", "PASS", (("subset", "919"),)),
    DatasetInfo("PASCAL VOC 2012", "VOC2012", "21 (20 + background)",
                "palette / SBD index PNG, 255 → ignore; train_aug = SBD list",
                "VOCdevkit/VOC2012", "voc", "SegSort"),
)


def dataset_table(root: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """One row per real dataset, with whether its folder exists under ``root`` (default COURSE_DATA)
    and the command that fetches it."""
    root = resolve_root(root)
    return [
        {
            "dataset": info.name,
            "loader": f"course_lib.data.{info.loader}",
            "classes": info.classes,
            "labels": info.labels,
            "used by": info.used_by,
            "on disk": "yes" if (root / info.folder).is_dir() else "no",
            "fetch with": fetch_command(info.script, **dict(info.fields)),
        }
        for info in DATASETS
    ]
