"""PASCAL VOC 2012 segmentation, with the SBD-augmented training set (``train_aug``, 10582 images).

- ``train`` (1464) and ``val`` (1449) read the official ``SegmentationClass`` PNGs. These are palette
  PNGs: the pixel values are palette *indices* (0..20, 255 void border), read with
  :func:`~course_lib.data.label_png.read_index_png`, never the displayed colours.
- ``train_aug`` (the SBD + VOC list used by SegSort, DeepLab and most unsupervised work) reads
  ``SegmentationClassAug`` (single-channel PNGs converted from SBD, same ids).
- 255 → -1; 21 classes, ``background`` is class 0.

Lists are ``ImageSets/Segmentation/<split>.txt``: one id per line (a line that holds paths, as in some
copies of ``train_aug.txt``, e.g. ``/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png``,
is read by the stem of its first path).
"""
from __future__ import annotations

import os
from pathlib import PurePosixPath

import numpy as np

from .folders import (
    JointTransform,
    SegmentationFolder,
    check_files_exist,
    fetch_command,
    read_id_list,
    require_dir,
    require_file,
    resolve_root,
)
from .label_maps import VOC_CLASSES, voc_indices_to_label
from .label_png import read_index_png

VOC_LABEL_FOLDERS = {"train_aug": "SegmentationClassAug", "train": "SegmentationClass", "val": "SegmentationClass"}


class VOC2012(SegmentationFolder):
    """PASCAL VOC 2012 (``split`` "train_aug", "train" or "val") from ``<root>/VOCdevkit/VOC2012``.

    ``ds[i]``: ``"image"`` 3×H×W float in [0, 1], ``"label"`` H×W int64 in 0..20 (-1 void),
    ``"meta"`` with the VOC id (e.g. ``2007_000032``) as ``"name"``.
    """

    classes = VOC_CLASSES

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train_aug",
        transform: JointTransform | None = None,
    ) -> None:
        if split not in VOC_LABEL_FOLDERS:
            raise ValueError(f"VOC2012 split must be one of {sorted(VOC_LABEL_FOLDERS)}, got {split!r}")
        root = resolve_root(root)
        base = require_dir(root / "VOCdevkit" / "VOC2012", "PASCAL VOC 2012", "voc", root)
        list_file = require_file(base / "ImageSets" / "Segmentation" / f"{split}.txt", f"VOC {split} list", "voc", root)
        image_dir = require_dir(base / "JPEGImages", "VOC images", "voc", root)
        label_dir = require_dir(base / VOC_LABEL_FOLDERS[split], f"VOC {VOC_LABEL_FOLDERS[split]} labels", "voc", root)
        ids = [PurePosixPath(entry).stem for entry in read_id_list(list_file)]
        image_paths = [str(image_dir / f"{voc_id}.jpg") for voc_id in ids]
        label_paths = [str(label_dir / f"{voc_id}.png") for voc_id in ids]
        hint = f"Re-run `{fetch_command('voc', root)}` to complete the download."
        check_files_exist(image_paths, f"VOC image listed in {list_file}", hint)
        check_files_exist(label_paths, f"VOC {VOC_LABEL_FOLDERS[split]} label of a listed image", hint)
        super().__init__(ids, image_paths, label_paths, transform)
        self.split = split

    def read_label(self, path: str) -> np.ndarray:
        """Palette or single-channel PNG → H×W int64 class ids 0..20, -1 void (was 255)."""
        return voc_indices_to_label(read_index_png(path), source=path)
