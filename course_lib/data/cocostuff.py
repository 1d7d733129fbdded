"""CocoStuff-27: COCO-Stuff 164k with the 182 fine classes merged into 27 coarse ones.

The benchmark of IIC, PiCIE and STEGO. Conventions:

- Labels are the ``stuffthingmaps_trainval2017`` PNGs (single channel, fine ids 0..181, 255
  unlabelled), mapped to 27 classes with STEGO's ``fine_to_coarse`` table
  (:data:`~course_lib.data.label_maps.COCOSTUFF_FINE_TO_COARSE27`; ``mhamilton723/STEGO``
  ``src/data.py``, class ``Coco``); 255 → -1.
- Images are restricted to the IIC "curated" lists: ``curated/<train2017|val2017>/<list>`` (one image
  id per line; the train and val lists are different files). The default list,
  ``Coco164kFull_Stuff_Coarse_7.txt``, is the one PiCIE uses for both splits and STEGO uses for ``val``
  (``subset=7``); STEGO's uncropped ``train`` loader reads ``Coco164kFull_Stuff_Coarse.txt`` instead
  (``subset=None``, ``mhamilton723/STEGO`` ``src/data.py:244-245, 479-484``), and so do its five-crop
  training set (``src/crop_datasets.py`` builds it through that loader) and kNN table:
  :data:`STEGO_TRAIN_LIST`. Pass ``image_list=`` to choose another list file in the same folder.
"""
from __future__ import annotations

import os

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
from .label_maps import COCOSTUFF27_CLASSES, cocostuff_fine_to_coarse27
from .label_png import read_index_png

COCOSTUFF_SPLIT_FOLDERS = {"train": "train2017", "val": "val2017"}
CURATED_LIST = "Coco164kFull_Stuff_Coarse_7.txt"
STEGO_TRAIN_LIST = "Coco164kFull_Stuff_Coarse.txt"
"""The train2017 list of STEGO's training set (official ``Coco(subset=None)``, ``src/data.py:244-245``)."""


class CocoStuff27(SegmentationFolder):
    """CocoStuff-27 (``split`` "train" or "val") from ``<root>/cocostuff`` (``root=None``: ``COURSE_DATA``).

    ``ds[i]``: ``"image"`` 3×H×W float in [0, 1], ``"label"`` H×W int64 in 0..26 (-1 unlabelled),
    ``"meta"`` with the COCO image id as ``"name"``. ``ds.classes`` are the 27 coarse names in id order.
    """

    classes = COCOSTUFF27_CLASSES

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        transform: JointTransform | None = None,
        image_list: str = CURATED_LIST,
    ) -> None:
        if split not in COCOSTUFF_SPLIT_FOLDERS:
            raise ValueError(f"CocoStuff27 split must be one of {sorted(COCOSTUFF_SPLIT_FOLDERS)}, got {split!r}")
        root = resolve_root(root)
        base = require_dir(root / "cocostuff", "CocoStuff", "cocostuff", root)
        folder = COCOSTUFF_SPLIT_FOLDERS[split]
        list_file = require_file(
            base / "curated" / folder / image_list, f"CocoStuff image list ({split})", "cocostuff", root
        )
        image_dir = require_dir(base / "images" / folder, f"CocoStuff images ({split})", "cocostuff", root)
        label_dir = require_dir(base / "annotations" / folder, f"CocoStuff annotations ({split})", "cocostuff", root)
        ids = read_id_list(list_file)
        image_paths = [str(image_dir / f"{image_id}.jpg") for image_id in ids]
        label_paths = [str(label_dir / f"{image_id}.png") for image_id in ids]
        hint = f"Re-run `{fetch_command('cocostuff', root)}` to complete the download."
        check_files_exist(image_paths, f"CocoStuff image listed in {list_file}", hint)
        check_files_exist(label_paths, "CocoStuff stuffthingmaps label of a listed image", hint)
        super().__init__(ids, image_paths, label_paths, transform)
        self.split = split

    def read_label(self, path: str) -> np.ndarray:
        """stuffthingmaps PNG → H×W int64 coarse ids 0..26, -1 unlabelled."""
        return cocostuff_fine_to_coarse27(read_index_png(path), source=path)
