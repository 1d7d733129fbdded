"""Data: the generated toy world, the real datasets (full profile), label encodings, transforms.

Every dataset returns the same sample dict: ``"image"`` (3×H×W float in [0, 1], not normalised; use
:func:`normalize` before a backbone), ``"label"`` (H×W int64, -1 = ignore) and ``"meta"``.

The names below load their submodule on first use (:func:`course_lib.lazy_exports`), so that a light user of
one submodule (the ImageNet-S evaluator reads label PNGs) does not pay for torch or scikit-image. A name that is
also a submodule's means the submodule (``course_lib.data.five_crop`` is the module; its function is
``course_lib.data.five_crop.five_crop``), whatever was imported first.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import lazy_exports

if TYPE_CHECKING:
    from .cityscapes import Cityscapes27
    from .cocostuff import CocoStuff27
    from .five_crop import FiveCropDataset, five_crop_boxes, prepare_five_crop
    from .folders import DATA_SCRIPT_COMMANDS, DatasetLayoutError, DatasetNotFoundError
    from .imagenet_s import ImageNetS, read_imagenet_s_categories
    from .label_maps import CITYSCAPES27_CLASSES, COCOSTUFF27_CLASSES, VOC_CLASSES
    from .label_png import LabelEncodingError, read_imagenet_s_png, write_imagenet_s_png
    from .toyworld import OBJECT_CLASSES, SCENE_CLASSES, ToyWorld, write_imagenet_s_layout
    from .transforms import (IMAGENET_MEAN, IMAGENET_STD, CenterCrop, Compose, RandomCrop, RandomHorizontalFlip,
                             RandomRecolour, Resize, denormalize, normalize)
    from .voc import VOC2012

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "cityscapes": ("Cityscapes27",),
    "cocostuff": ("CocoStuff27",),
    "five_crop": ("FiveCropDataset", "five_crop_boxes", "prepare_five_crop"),  # the function: data.five_crop.five_crop
    "folders": ("DATA_SCRIPT_COMMANDS", "DatasetLayoutError", "DatasetNotFoundError"),
    "imagenet_s": ("ImageNetS", "read_imagenet_s_categories"),
    "label_maps": ("CITYSCAPES27_CLASSES", "COCOSTUFF27_CLASSES", "VOC_CLASSES"),
    "label_png": ("LabelEncodingError", "read_imagenet_s_png", "write_imagenet_s_png"),
    "toyworld": ("OBJECT_CLASSES", "SCENE_CLASSES", "ToyWorld", "write_imagenet_s_layout"),
    "transforms": ("IMAGENET_MEAN", "IMAGENET_STD", "CenterCrop", "Compose", "RandomCrop", "RandomHorizontalFlip",
                   "RandomRecolour", "Resize", "denormalize", "normalize"),
    "voc": ("VOC2012",),
}, submodules=("catalog", "download", "hub", "prepare", "textures"))
