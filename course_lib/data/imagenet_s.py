"""ImageNet-S (Gao et al., TPAMI 2022): ImageNet images with pixel labels, subsets of 50, 300 and 919 classes.

Conventions, from the official repository ``LUSSeg/ImageNet-S``:

- categories: ``data/categories/ImageNetS_categories_im{50,300,919}.txt``, one wnid per line; the class
  id of a wnid is its 1-based line number, 0 is 'other' (background), so ``classes[0] == "other"``;
- folders (``datapreparation/*.py``): ``ImageNetS{N}/{train,train-semi,validation}/<wnid>/<name>.JPEG``,
  labels in ``ImageNetS{N}/{train-semi,validation}-segmentation/<wnid>/<name>.png``. The wnid folder is
  the image's category (for ``train-semi`` and ``validation`` it can differ from the ImageNet folder the
  image came from);
- label PNGs are RGB with ``id = R + 256·G`` (decoded in int32, :func:`~course_lib.data.label_png.
  read_imagenet_s_png`), 1000 = ignore (→ -1 here);
- ``train`` has no pixel labels (image-level category only).

The course's toy world writes the same layout (``<dir>/validation/<class>/<name>.JPEG``,
``<dir>/validation-segmentation/<class>/<name>.png``, ``<dir>/categories.txt``): load it with
``ImageNetS(split="validation", subset_dir=dir)``.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from .folders import (
    JointTransform,
    SegmentationFolder,
    check_files_exist,
    dataset_not_found,
    fetch_command,
    list_image_files,
    require_dir,
    require_file,
    resolve_root,
)
from .label_maps import IMAGENET_S_OTHER_NAME, imagenet_s_ids_to_label
from .label_png import read_imagenet_s_png

IMAGENET_S_SUBSETS = (50, 300, 919)
IMAGENET_S_SPLITS = ("train", "train-semi", "validation")
LABELLED_SPLITS = ("train-semi", "validation")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
TOY_CATEGORIES_FILE = "categories.txt"


def categories_file_name(subset: int) -> str:
    """Official file name of a subset's category list, e.g. ``ImageNetS_categories_im50.txt``."""
    return f"ImageNetS_categories_im{subset}.txt"


def read_imagenet_s_categories(path: str | os.PathLike) -> list[str]:
    """The categories (wnids) of a category file, in class-id order: entry ``k`` has class id ``k + 1``."""
    with open(path, encoding="utf-8") as file:
        categories = [line.strip() for line in file if line.strip()]
    if not categories:
        raise ValueError(f"{path}: the category file is empty")
    duplicates = sorted(name for name, count in Counter(categories).items() if count > 1)
    if duplicates:
        raise ValueError(f"{path}: categories listed twice: {duplicates[:5]}")
    return categories


class ImageNetS(SegmentationFolder):
    """ImageNet-S{subset} ``split`` ("train", "train-semi" or "validation") as the course's sample dicts.

    Standard layout: ``<root>/ImageNetS/ImageNetS{subset}/...`` with categories from
    ``<root>/ImageNetS/lists/categories/ImageNetS_categories_im{subset}.txt`` (``root=None``:
    ``COURSE_DATA``). Any other folder in the same layout (the toy world's): ``subset_dir=`` (and
    ``categories_file=``, default ``<subset_dir>/categories.txt``); ``subset`` may then be ``None``.

    ``ds[i]``: ``"image"`` 3×H×W float in [0, 1]; ``"label"`` H×W int64 (0 'other', 1..K, -1 ignore;
    all -1 for ``train``); ``"meta"``: ``"name"`` (``<wnid>/<stem>``), ``"category"`` (class id of the
    wnid folder, 1..K) and ``"labelled"``. ``ds.classes`` = ``["other", wnid_1, ..., wnid_K]``.
    """

    def __init__(
        self,
        subset: int | None = None,
        split: str = "validation",
        root: str | os.PathLike | None = None,
        categories_file: str | os.PathLike | None = None,
        transform: JointTransform | None = None,
        subset_dir: str | os.PathLike | None = None,
    ) -> None:
        if split not in IMAGENET_S_SPLITS:
            raise ValueError(f"ImageNetS split must be one of {IMAGENET_S_SPLITS}, got {split!r}")
        if subset is not None and subset not in IMAGENET_S_SUBSETS:
            raise ValueError(f"ImageNetS subset must be one of {IMAGENET_S_SUBSETS}, got {subset!r}")
        if subset is None and subset_dir is None:
            raise ValueError("ImageNetS needs subset=50, 300 or 919 (or subset_dir= for a folder in the same layout)")
        root = resolve_root(root)
        fields = {"script": "imagenet_s", "root": root, "subset": subset if subset is not None else "{50,300,919}"}
        if subset_dir is None:
            subset_path = require_dir(root / "ImageNetS" / f"ImageNetS{subset}", f"ImageNet-S{subset}", **fields)
        else:
            subset_path = require_dir(Path(subset_dir).expanduser(), "ImageNet-S folder", **fields)
        if categories_file is None:
            categories_file = (
                root / "ImageNetS" / "lists" / "categories" / categories_file_name(subset)
                if subset_dir is None
                else subset_path / TOY_CATEGORIES_FILE
            )
        categories = read_imagenet_s_categories(
            require_file(Path(categories_file), "ImageNet-S category list", **fields)
        )
        if subset is not None and len(categories) != subset:
            raise ValueError(
                f"{categories_file} lists {len(categories)} categories but subset={subset}; "
                "pass the category file of this subset"
            )
        self.subset = subset
        self.split = split
        self.categories_file = Path(categories_file)
        self.wnids = categories
        self.classes = [IMAGENET_S_OTHER_NAME, *categories]
        self.labelled = split in LABELLED_SPLITS

        image_dir = require_dir(subset_path / split, f"ImageNet-S{subset or ''} {split} images", **fields)
        label_dir = subset_path / f"{split}-segmentation"
        if self.labelled:
            require_dir(label_dir, f"ImageNet-S{subset or ''} {split} labels", **fields)
        class_ids = {wnid: class_id for class_id, wnid in enumerate(categories, start=1)}
        names, image_paths, label_paths, self.categories = [], [], [], []
        for class_dir in sorted(path for path in image_dir.iterdir() if path.is_dir()):
            if class_dir.name not in class_ids:
                raise ValueError(
                    f"{class_dir}: folder {class_dir.name!r} is not a category of {self.categories_file}; "
                    "is this the category file of this subset?"
                )
            for image_path in list_image_files(class_dir, IMAGE_SUFFIXES):
                names.append(f"{class_dir.name}/{image_path.stem}")
                image_paths.append(str(image_path))
                label_path = label_dir / class_dir.name / f"{image_path.stem}.png"
                label_paths.append(str(label_path) if self.labelled else None)
                self.categories.append(class_ids[class_dir.name])
        if not names:
            raise dataset_not_found(
                f"ImageNet-S{subset or ''} {split} images", f"{image_dir} holds no <wnid>/<name>.JPEG files", **fields
            )
        if self.labelled:
            check_files_exist(
                label_paths,
                f"ImageNet-S {split} label of an image",
                f"Re-run `{fetch_command('imagenet_s', root, subset=fields['subset'])}` to complete the labels.",
            )
        super().__init__(names, image_paths, label_paths, transform)

    def read_label(self, path: str) -> np.ndarray:
        """RGB label PNG (R + 256·G) → H×W int64: 0 'other', 1..K, -1 ignore (was 1000)."""
        return imagenet_s_ids_to_label(read_imagenet_s_png(path, num_classes=len(self.wnids)))

    def extra_meta(self, index: int) -> dict:
        return {"category": self.categories[index], "labelled": self.labelled}

    def __repr__(self) -> str:
        return (
            f"ImageNetS(subset={self.subset}, split={self.split!r}: "
            f"{len(self)} images, {len(self.wnids)} categories)"
        )
