"""Cityscapes-27: the fine Cityscapes annotations with all 27 non-void classes (STEGO's protocol).

Labels are the official ``*_gtFine_labelIds.png`` (single channel, labelIds 0..33). Following
``mhamilton723/STEGO`` ``src/data.py`` (``CityscapesSeg``: ``target - 7``, negatives → -1), labelIds
7..33 become classes 0..26 and the void ids 0..6 become -1; this is *not* the 19-class ``trainId``
protocol of supervised segmentation. ``train`` is the 2975 fine training images, ``val`` the 500
validation images; images are listed city by city in sorted order.
"""
from __future__ import annotations

import os

import numpy as np

from .folders import (
    JointTransform,
    SegmentationFolder,
    check_files_exist,
    dataset_not_found,
    fetch_command,
    require_dir,
    resolve_root,
)
from .label_maps import CITYSCAPES27_CLASSES, cityscapes_label_ids_to_27
from .label_png import read_index_png

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
CITYSCAPES_SPLITS = ("train", "val")


class Cityscapes27(SegmentationFolder):
    """Cityscapes-27 (``split`` "train" or "val") from ``<root>/cityscapes`` (``root=None``: ``COURSE_DATA``).

    ``ds[i]``: ``"image"`` 3×H×W float in [0, 1] (1024×2048), ``"label"`` H×W int64 in 0..26
    (-1 void), ``"meta"`` with ``"name"`` (e.g. ``aachen_000000_000019``) and ``"city"``.
    """

    classes = CITYSCAPES27_CLASSES

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        transform: JointTransform | None = None,
    ) -> None:
        if split not in CITYSCAPES_SPLITS:
            raise ValueError(f"Cityscapes27 split must be one of {CITYSCAPES_SPLITS}, got {split!r}")
        root = resolve_root(root)
        base = require_dir(root / "cityscapes", "Cityscapes", "cityscapes", root)
        image_dir = require_dir(base / "leftImg8bit" / split, f"Cityscapes images ({split})", "cityscapes", root)
        label_dir = require_dir(base / "gtFine" / split, f"Cityscapes fine labels ({split})", "cityscapes", root)
        names, cities, image_paths, label_paths = [], [], [], []
        for city_dir in sorted(path for path in image_dir.iterdir() if path.is_dir()):
            for file_name in sorted(os.listdir(city_dir)):
                if not file_name.endswith(IMAGE_SUFFIX):
                    continue
                stem = file_name[: -len(IMAGE_SUFFIX)]
                names.append(stem)
                cities.append(city_dir.name)
                image_paths.append(str(city_dir / file_name))
                label_paths.append(str(label_dir / city_dir.name / f"{stem}{LABEL_SUFFIX}"))
        if not names:
            raise dataset_not_found(
                f"Cityscapes images ({split})", f"{image_dir} holds no <city>/*{IMAGE_SUFFIX} files", "cityscapes", root
            )
        check_files_exist(
            label_paths,
            "Cityscapes labelIds of an image",
            f"Re-run `{fetch_command('cityscapes', root)}` with gtFine_trainvaltest.zip in DIR.",
        )
        super().__init__(names, image_paths, label_paths, transform)
        self.cities = cities
        self.split = split

    def read_label(self, path: str) -> np.ndarray:
        """``*_gtFine_labelIds.png`` → H×W int64 ids 0..26, -1 void."""
        return cityscapes_label_ids_to_27(read_index_png(path))

    def extra_meta(self, index: int) -> dict:
        return {"city": self.cities[index]}

