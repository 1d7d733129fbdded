"""Class lists and label-id mappings of the real benchmarks, stored as data.

Every mapping returns the course's convention: an ``H×W`` int64 array with ``-1`` for ignored pixels.

Sources (facts read from the official repositories):

- CocoStuff-27: the 182 → 27 ``fine_to_coarse`` table and the 27 class names (in this order) of STEGO,
  ``mhamilton723/STEGO`` ``src/data.py`` (class ``Coco``) and ``src/train_segmentation.py``
  (``get_class_labels``). Coarse ids 0..11 are the COCO *thing* super-categories, 12..26 the *stuff*
  ones. STEGO names two classes ``food`` and two ``furniture`` (one thing, one stuff); here the stuff
  ones are called ``food-stuff`` and ``furniture-stuff`` so that every name is unique.
- Cityscapes-27: STEGO's ``CityscapesSeg`` subtracts the first non-void labelId (7) and sets negative
  ids to -1, i.e. labelIds 7..33 become 0..26 (the 27 classes of the Cityscapes ``labels.py`` with
  ``category != void``, not the 19 trainIds). Names as in STEGO's ``get_class_labels``.
- PASCAL VOC 2012: the 21 classes of the devkit (background first); 255 is the 'void' border.
"""
from __future__ import annotations

import numpy as np

from .label_png import IMAGENET_S_IGNORE, LabelEncodingError

IGNORE_INDEX = -1

# --- CocoStuff ---------------------------------------------------------------------------------------

COCOSTUFF_UNLABELLED = 255
"""Value of unlabelled pixels in the stuffthingmaps PNGs (fine ids are 0..181)."""

COCOSTUFF_NUM_FINE = 182

COCOSTUFF27_CLASSES: tuple[str, ...] = (
    # things (coarse ids 0..11)
    "electronic", "appliance", "food", "furniture", "indoor", "kitchen",
    "accessory", "animal", "outdoor", "person", "sports", "vehicle",
    # stuff (coarse ids 12..26)
    "ceiling", "floor", "food-stuff", "furniture-stuff", "rawmaterial", "textile", "wall",
    "window", "building", "ground", "plant", "sky", "solid", "structural", "water",
)

COCOSTUFF27_FIRST_STUFF = 12
"""Coarse ids below this are thing classes, the rest stuff classes (STEGO's ``first_stuff_index``)."""

COCOSTUFF_FINE_TO_COARSE27: tuple[int, ...] = (
    9, 11, 11, 11, 11, 11, 11, 11, 11,  8,  # fine 0..9
    8,  8,  8,  8,  8,  7,  7,  7,  7,  7,  # 10..19
    7,  7,  7,  7,  7,  6,  6,  6,  6,  6,  # 20..29
    6,  6,  6, 10, 10, 10, 10, 10, 10, 10,  # 30..39
    10, 10, 10,  5,  5,  5,  5,  5,  5,  5,  # 40..49
    5,  2,  2,  2,  2,  2,  2,  2,  2,  2,  # 50..59
    2,  3,  3,  3,  3,  3,  3,  3,  3,  3,  # 60..69
    3,  0,  0,  0,  0,  0,  0,  1,  1,  1,  # 70..79
    1,  1,  1,  4,  4,  4,  4,  4,  4,  4,  # 80..89
    4, 17, 17, 22, 20, 20, 22, 15, 25, 16,  # 90..99
    13, 12, 12, 17, 17, 23, 15, 15, 17, 15,  # 100..109
    21, 15, 25, 13, 13, 13, 13, 13, 22, 26,  # 110..119
    14, 14, 15, 22, 21, 21, 24, 20, 22, 15,  # 120..129
    17, 16, 15, 22, 24, 21, 17, 25, 16, 21,  # 130..139
    17, 22, 16, 21, 21, 25, 21, 26, 21, 24,  # 140..149
    20, 17, 14, 21, 26, 15, 23, 20, 21, 24,  # 150..159
    15, 24, 22, 25, 15, 20, 17, 17, 22, 14,  # 160..169
    18, 18, 18, 18, 18, 18, 18, 26, 26, 19,  # 170..179
    19, 24,                                  # 180..181
)
"""Coarse (27-class) id of each fine stuffthingmaps id 0..181, STEGO's ``fine_to_coarse``."""


def _cocostuff_lookup_table() -> np.ndarray:
    table = np.full(256, IGNORE_INDEX, dtype=np.int64)
    table[:COCOSTUFF_NUM_FINE] = COCOSTUFF_FINE_TO_COARSE27
    return table


_COCOSTUFF_LUT = _cocostuff_lookup_table()


def cocostuff_fine_to_coarse27(fine: np.ndarray, source: str = "label") -> np.ndarray:
    """H×W stuffthingmaps ids (0..181, 255 unlabelled) → H×W int64 CocoStuff-27 ids (255 → -1).

    One table lookup for the whole image. Values 182..254 do not exist in the stuffthingmaps
    encoding and raise :class:`LabelEncodingError` (``source`` names the file in the message).
    """
    fine = np.asarray(fine)
    if fine.size and (fine.min() < 0 or fine.max() > COCOSTUFF_UNLABELLED):
        raise LabelEncodingError(
            f"{source}: values outside 0..255 ({fine.min()}..{fine.max()}) are not stuffthingmaps ids"
        )
    fine = fine.astype(np.int64, copy=False)
    invalid = (fine >= COCOSTUFF_NUM_FINE) & (fine != COCOSTUFF_UNLABELLED)
    if invalid.any():
        raise LabelEncodingError(
            f"{source}: ids {sorted(np.unique(fine[invalid]).tolist())[:5]} are not stuffthingmaps ids "
            f"(0..{COCOSTUFF_NUM_FINE - 1}, {COCOSTUFF_UNLABELLED} unlabelled); is this the stuff-only "
            "annotation (stuff_*.png) or an RGB visualisation rather than stuffthingmaps_trainval2017?"
        )
    return _COCOSTUFF_LUT[fine]


# --- Cityscapes --------------------------------------------------------------------------------------

CITYSCAPES27_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "parking", "rail track", "building",
    "wall", "fence", "guard rail", "bridge", "tunnel",
    "pole", "polegroup", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "caravan", "trailer", "train",
    "motorcycle", "bicycle",
)

CITYSCAPES_FIRST_LABEL_ID = 7
"""labelId of 'road', the first non-void class; labelIds 7..33 are the 27 classes."""


def cityscapes_label_ids_to_27(label_ids: np.ndarray) -> np.ndarray:
    """H×W Cityscapes labelIds (0..33) → H×W int64 ids 0..26 (labelId − 7); void ids (< 7) → -1.

    Ids above 33 (not produced by the official ``*_gtFine_labelIds.png``) are also set to -1;
    STEGO leaves them at ``id − 7 ≥ 27``, which its metric then ignores, so scores are unchanged.
    """
    ids = np.asarray(label_ids).astype(np.int64)
    shifted = ids - CITYSCAPES_FIRST_LABEL_ID
    return np.where((shifted >= 0) & (shifted < len(CITYSCAPES27_CLASSES)), shifted, IGNORE_INDEX)


# --- PASCAL VOC --------------------------------------------------------------------------------------

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

VOC_VOID = 255


def voc_indices_to_label(indices: np.ndarray, source: str = "label") -> np.ndarray:
    """H×W VOC palette indices (0..20, 255 void) → H×W int64 ids with 255 → -1.

    Any other value raises :class:`LabelEncodingError` (a colour PNG converted to grey, for instance).
    """
    ids = np.asarray(indices).astype(np.int64)
    invalid = ((ids >= len(VOC_CLASSES)) & (ids != VOC_VOID)) | (ids < 0)
    if invalid.any():
        raise LabelEncodingError(
            f"{source}: values {sorted(np.unique(ids[invalid]).tolist())[:5]} are not VOC class indices "
            f"(0..{len(VOC_CLASSES) - 1}, {VOC_VOID} void)"
        )
    return np.where(ids == VOC_VOID, IGNORE_INDEX, ids)


# --- ImageNet-S --------------------------------------------------------------------------------------

IMAGENET_S_OTHER_NAME = "other"


def imagenet_s_ids_to_label(ids: np.ndarray) -> np.ndarray:
    """H×W ImageNet-S ids (0 'other', 1..K, 1000 ignore) → H×W int64 with 1000 → -1."""
    ids = np.asarray(ids).astype(np.int64)
    return np.where(ids == IMAGENET_S_IGNORE, IGNORE_INDEX, ids)
