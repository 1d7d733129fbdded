"""STEGO's five-crop preparation of the training data, and a loader for its output.

``mhamilton723/STEGO`` ``src/crop_datasets.py`` cuts every image (and its label) into five crops with
``torchvision.transforms.functional.five_crop``: top-left, top-right, bottom-left, bottom-right and
centre, each ``int(ratio·H) × int(ratio·W)`` (ratio 0.5), the centre one placed by ``round`` of half
the margin. Crop ``c`` of source image ``i`` is saved as number ``k = 5·i + c``:

- ``cropped/<dataset>_five_crop_0.5/img/<split>/<k>.jpg``: RGB JPEG (PIL default quality 75, as STEGO
  saves it);
- ``cropped/<dataset>_five_crop_0.5/label/<split>/<k>.png``: single-channel uint8 PNG holding
  ``label + 1`` (0 = ignore, class ``c`` stored as ``c + 1``); STEGO's ``CroppedDataset`` subtracts 1;
- ``cropped/<dataset>_five_crop_0.5/index/<split>.csv`` (the course's addition): for each ``k`` its
  source image name and index, the crop position and box. It is written last, atomically: a folder
  without it is unfinished, and re-running resumes where it stopped.

:func:`five_crop_dataset` is what a training run calls: the prepared set, prepared first when missing (the
"crop → kNN → train" order the official code leaves to its users). A run on the first ``n_images`` source
images only (``COURSE_SMOKE``) writes them to their own folder, ``..._five_crop_0.5_first<n>``, so a partial
set is never mistaken for the whole one.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .. import config
from .cityscapes import Cityscapes27
from .cocostuff import STEGO_TRAIN_LIST, CocoStuff27
from .folders import DatasetLayoutError, JointTransform, SegmentationFolder, dataset_not_found, resolve_root
from .label_png import LabelEncodingError, read_index_png

FIVE_CROP_POSITIONS = ("top_left", "top_right", "bottom_left", "bottom_right", "center")
FIVE_CROP_SOURCES: dict[str, Callable[..., SegmentationFolder]] = {
    "cocostuff27": CocoStuff27,
    "cityscapes27": Cityscapes27,
}
SOURCE_OPTIONS: dict[tuple[str, str], dict] = {("cocostuff27", "train"): {"image_list": STEGO_TRAIN_LIST}}
"""Loader options of the sources STEGO crops: its CocoStuff training set is ``Coco164kFull_Stuff_Coarse.txt``
(``src/crop_datasets.py`` reads it through ``ContrastiveSegDataset(crop_type=None)``, i.e. ``Coco(subset=None)``,
``src/data.py:244-245, 479-482``), not the ``_7`` list of the validation set."""
INDEX_COLUMNS = ("k", "source_name", "source_index", "position", "top", "left", "height", "width")


def five_crop_source(dataset: str, split: str, root: str | os.PathLike | None = None) -> SegmentationFolder:
    """The uncropped images that STEGO five-crops for ``dataset`` ``split`` (:data:`SOURCE_OPTIONS`)."""
    if dataset not in FIVE_CROP_SOURCES:
        raise ValueError(f"five-crop dataset must be one of {sorted(FIVE_CROP_SOURCES)}, got {dataset!r}")
    return FIVE_CROP_SOURCES[dataset](root=root, split=split, **SOURCE_OPTIONS.get((dataset, split), {}))


def _check_ratio(ratio: float) -> None:
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")


def five_crop_boxes(height: int, width: int, ratio: float = 0.5) -> list[tuple[int, int, int, int]]:
    """The five ``(top, left, crop_height, crop_width)`` boxes of an ``height×width`` image.

    Order :data:`FIVE_CROP_POSITIONS`; sizes ``int(ratio·height)``, ``int(ratio·width)`` as STEGO;
    positions as ``torchvision.transforms.functional.five_crop``.
    """
    _check_ratio(ratio)
    crop_height, crop_width = int(height * ratio), int(width * ratio)
    if crop_height < 1 or crop_width < 1:
        raise ValueError(f"a {height}×{width} image is too small for crops of ratio {ratio}")
    bottom, right = height - crop_height, width - crop_width
    center_top, center_left = int(round(bottom / 2.0)), int(round(right / 2.0))
    corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), (center_top, center_left)]
    return [(top, left, crop_height, crop_width) for top, left in corners]


def five_crop(
    image: torch.Tensor, label: torch.Tensor, ratio: float = 0.5
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The five (3×h×w image, h×w label) crops of a 3×H×W image and its H×W label, in STEGO's order."""
    if image.ndim != 3 or tuple(label.shape) != tuple(image.shape[1:]):
        raise ValueError(f"expected a 3×H×W image and an H×W label, got {tuple(image.shape)} and {tuple(label.shape)}")
    return [
        (image[:, top : top + h, left : left + w], label[top : top + h, left : left + w])
        for top, left, h, w in five_crop_boxes(image.shape[1], image.shape[2], ratio)
    ]


def encode_crop_label(label: torch.Tensor) -> np.ndarray:
    """H×W int64 label (-1 ignore) → H×W uint8 ``label + 1``, STEGO's cropped-label encoding."""
    shifted = label.to(torch.int64) + 1
    if shifted.numel() and (shifted.min() < 0 or shifted.max() > 255):
        raise LabelEncodingError(f"label ids {int(label.min())}..{int(label.max())} do not fit label + 1 in uint8")
    return shifted.to(torch.uint8).numpy()


def decode_crop_label(stored: np.ndarray) -> np.ndarray:
    """H×W stored ``label + 1`` values → H×W int64 label (0 → -1 ignore)."""
    return np.asarray(stored).astype(np.int64) - 1


def five_crop_dir(dataset: str, root: str | os.PathLike | None = None, ratio: float = 0.5,
                  n_images: int | None = None) -> Path:
    """``<root>/cropped/<dataset>_five_crop_<ratio>`` (STEGO's folder name); ``_first<n>`` appended for the
    crops of the first ``n_images`` source images only."""
    suffix = "" if n_images is None else f"_first{n_images}"
    return resolve_root(root) / "cropped" / f"{dataset}_five_crop_{ratio}{suffix}"


def _save_atomic(array: np.ndarray, path: Path, **save_kwargs) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    Image.fromarray(np.ascontiguousarray(array)).save(temporary, **save_kwargs)
    os.replace(temporary, path)


def _image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """3×H×W float in [0, 1] → H×W×3 uint8, rounding as STEGO (``x·255 + 0.5``, clamped, truncated)."""
    return image.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


class _CropWriter(Dataset):
    """Item ``i`` writes the five crops of source sample ``i`` and returns their index rows."""

    def __init__(self, source: SegmentationFolder, out_dir: Path, split: str, ratio: float, jpeg_quality: int,
                 n_images: int | None = None):
        self.source, self.ratio, self.jpeg_quality = source, ratio, jpeg_quality
        self.n_images = len(source) if n_images is None else min(n_images, len(source))
        self.img_dir = out_dir / "img" / split
        self.label_dir = out_dir / "label" / split

    def __len__(self) -> int:
        return self.n_images

    def _paths(self, k: int) -> tuple[Path, Path]:
        return self.img_dir / f"{k}.jpg", self.label_dir / f"{k}.png"

    def __getitem__(self, index: int) -> list[tuple]:
        name = self.source.names[index]
        ks = [5 * index + crop for crop in range(5)]
        if all(path.is_file() for k in ks for path in self._paths(k)):  # resumed run: already written
            with Image.open(self.source.image_paths[index]) as image:
                width, height = image.size
        else:
            sample = self.source[index]
            image, label = sample["image"], sample["label"]
            height, width = label.shape
            for k, (image_crop, label_crop) in zip(ks, five_crop(image, label, self.ratio)):
                image_path, label_path = self._paths(k)
                _save_atomic(_image_to_uint8(image_crop), image_path, format="JPEG", quality=self.jpeg_quality)
                _save_atomic(encode_crop_label(label_crop), label_path, format="PNG")
        boxes = five_crop_boxes(height, width, self.ratio)
        return [(k, name, index, position, *box) for k, position, box in zip(ks, FIVE_CROP_POSITIONS, boxes)]


def _rows_of_one_item(batch: list[tuple]) -> list[tuple]:
    return batch


def prepare_five_crop(
    dataset: str,
    split: str,
    root: str | os.PathLike | None = None,
    ratio: float = 0.5,
    num_workers: int = 0,
    jpeg_quality: int = 75,
    n_images: int | None = None,
) -> Path:
    """Write the five-crop version of ``dataset`` ("cocostuff27" or "cityscapes27") ``split``; return its folder.

    Reads the source with :func:`five_crop_source` (:class:`CocoStuff27` with STEGO's training list for
    CocoStuff ``train``, :class:`Cityscapes27`) from ``root`` (``None``:
    ``COURSE_DATA``) and writes ``root/cropped/<dataset>_five_crop_<ratio>/`` (see the module doc), or,
    with ``n_images``, the crops of the first ``n_images`` source images to
    ``five_crop_dir(dataset, root, ratio, n_images)``. ``num_workers`` processes read and write in
    parallel. Files already written are kept (resume). Bad arguments raise ``ValueError`` before anything
    is read or written (no empty output folder is left behind).
    """
    if dataset not in FIVE_CROP_SOURCES:
        raise ValueError(f"five-crop dataset must be one of {sorted(FIVE_CROP_SOURCES)}, got {dataset!r}")
    if n_images is not None and n_images < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    _check_ratio(ratio)
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    root = resolve_root(root)
    source = five_crop_source(dataset, split, root)
    out_dir = five_crop_dir(dataset, root, ratio, n_images)
    writer = _CropWriter(source, out_dir, split, ratio, jpeg_quality, n_images)
    writer.img_dir.mkdir(parents=True, exist_ok=True)
    writer.label_dir.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(writer, batch_size=None, num_workers=num_workers, collate_fn=_rows_of_one_item)
    rows = []
    for item_rows in config.progress(loader, total=len(writer), desc=f"five-crop {dataset} {split}", unit="img"):
        rows.extend(item_rows)
    index_path = out_dir / "index" / f"{split}.csv"
    index_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = index_path.with_name(f".{index_path.name}.tmp")
    with open(temporary, "w", newline="", encoding="utf-8") as file:
        table = csv.writer(file)
        table.writerow(INDEX_COLUMNS)
        table.writerows(sorted(rows))
    os.replace(temporary, index_path)
    return out_dir


class FiveCropDataset(SegmentationFolder):
    """The output of :func:`prepare_five_crop` as sample dicts (like STEGO's ``CroppedDataset``).

    ``ds[k]``: ``"image"`` 3×h×w float in [0, 1], ``"label"`` h×w int64 (-1 ignore), ``"meta"`` with
    ``"name"`` (``<source name>_<position>``), ``"source_name"``, ``"source_index"`` and ``"position"``.
    ``ds.classes`` are the source dataset's classes.
    """

    def __init__(
        self,
        dataset: str = "cocostuff27",
        split: str = "train",
        root: str | os.PathLike | None = None,
        ratio: float = 0.5,
        transform: JointTransform | None = None,
        n_images: int | None = None,
    ) -> None:
        if dataset not in FIVE_CROP_SOURCES:
            raise ValueError(f"five-crop dataset must be one of {sorted(FIVE_CROP_SOURCES)}, got {dataset!r}")
        root = resolve_root(root)
        out_dir = five_crop_dir(dataset, root, ratio, n_images)
        index_path = out_dir / "index" / f"{split}.csv"
        if not index_path.is_file():
            problem = f"{index_path} does not exist" + (" (the preparation did not finish)" if out_dir.is_dir() else "")
            raise dataset_not_found(
                f"Five-crop {dataset} {split}", problem, "five_crop", root, dataset=dataset, split=split
            )
        with open(index_path, newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        if [int(row["k"]) for row in rows] != list(range(len(rows))):
            raise ValueError(
                f"{index_path}: crop numbers k are not 0..{len(rows) - 1} in order; re-run the preparation"
            )
        self.classes = FIVE_CROP_SOURCES[dataset].classes
        self.split = split
        self.source_names = [row["source_name"] for row in rows]
        self.source_indices = [int(row["source_index"]) for row in rows]
        self.positions = [row["position"] for row in rows]
        super().__init__(
            [f"{row['source_name']}_{row['position']}" for row in rows],
            [str(out_dir / "img" / split / f"{row['k']}.jpg") for row in rows],
            [str(out_dir / "label" / split / f"{row['k']}.png") for row in rows],
            transform,
        )

    def read_label(self, path: str) -> np.ndarray:
        """Stored ``label + 1`` PNG → h×w int64 (-1 ignore)."""
        label = decode_crop_label(read_index_png(path))
        if label.size and label.max() >= len(self.classes):
            raise LabelEncodingError(
                f"{path}: stored value {int(label.max()) + 1} is above {len(self.classes)} (= classes + 1); "
                "this is not a five-crop label of this dataset"
            )
        return label

    def extra_meta(self, index: int) -> dict:
        return {
            "source_name": self.source_names[index],
            "source_index": self.source_indices[index],
            "position": self.positions[index],
        }


def five_crop_dataset(
    dataset: str,
    split: str,
    root: str | os.PathLike | None = None,
    ratio: float = 0.5,
    transform: JointTransform | None = None,
    n_images: int | None = None,
    num_workers: int = 0,
) -> FiveCropDataset:
    """The five-crop set of ``dataset`` ``split`` (:class:`FiveCropDataset`), prepared first when missing.

    ``n_images``: the crops of the first ``n_images`` source images only (all of them when the split has
    no more; then the complete set's folder is used, and a later full run reuses it). A missing source
    dataset raises :class:`~.folders.DatasetNotFoundError` (naming its fetch command) before anything is
    written; an interrupted preparation resumes. A prepared set cut from other source images (e.g. an older
    CocoStuff set of the ``_7`` list) raises :class:`~.folders.DatasetLayoutError` naming its folder.
    """
    root = resolve_root(root)
    source = five_crop_source(dataset, split, root)
    if n_images is not None and n_images >= len(source):
        n_images = None
    if not (five_crop_dir(dataset, root, ratio, n_images) / "index" / f"{split}.csv").is_file():
        prepare_five_crop(dataset, split, root, ratio, num_workers=num_workers, n_images=n_images)
    crops = FiveCropDataset(dataset, split, root, ratio, transform, n_images)
    expected = source.names[:n_images] if n_images is not None else source.names
    if crops.source_names[::5] != list(expected):
        raise DatasetLayoutError(
            f"{five_crop_dir(dataset, root, ratio, n_images)} holds the crops of {len(crops) // 5} other source "
            f"images than the {len(expected)} of {dataset} {split} that STEGO crops; delete that folder to "
            "prepare it again")
    return crops
