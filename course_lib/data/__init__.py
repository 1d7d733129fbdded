"""Data: the generated toy world, the real datasets (full profile), label encodings, transforms.

Every dataset returns the same sample dict: ``"image"`` (3×H×W float in [0, 1], not normalised; use
:func:`normalize` before a backbone), ``"label"`` (H×W int64, -1 = ignore) and ``"meta"``.
"""
from .cityscapes import Cityscapes27
from .cocostuff import CocoStuff27
from .five_crop import FiveCropDataset, five_crop, five_crop_boxes, prepare_five_crop
from .folders import DATA_SCRIPT_COMMANDS, DatasetLayoutError, DatasetNotFoundError
from .imagenet_s import ImageNetS, read_imagenet_s_categories
from .label_maps import CITYSCAPES27_CLASSES, COCOSTUFF27_CLASSES, VOC_CLASSES
from .label_png import LabelEncodingError, read_imagenet_s_png, write_imagenet_s_png
from .toyworld import OBJECT_CLASSES, SCENE_CLASSES, ToyWorld, write_imagenet_s_layout
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRecolour,
    Resize,
    denormalize,
    normalize,
)
from .voc import VOC2012

__all__ = [
    "CITYSCAPES27_CLASSES", "COCOSTUFF27_CLASSES", "DATA_SCRIPT_COMMANDS", "IMAGENET_MEAN", "IMAGENET_STD",
    "OBJECT_CLASSES", "SCENE_CLASSES", "VOC_CLASSES", "CenterCrop", "Cityscapes27", "CocoStuff27", "Compose",
    "DatasetLayoutError", "DatasetNotFoundError", "FiveCropDataset", "ImageNetS", "LabelEncodingError",
    "RandomCrop", "RandomHorizontalFlip", "RandomRecolour", "Resize", "ToyWorld", "VOC2012", "denormalize", "five_crop",
    "five_crop_boxes", "normalize", "prepare_five_crop", "read_imagenet_s_categories", "read_imagenet_s_png",
    "write_imagenet_s_layout", "write_imagenet_s_png",
]
