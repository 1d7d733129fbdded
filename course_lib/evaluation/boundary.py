"""Inner boundaries of label maps: the pixels that boundary IoU scores.

Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation Evaluation",
CVPR 2021) compares two segmentations only near their contours. The ImageNet-S evaluator (Gao et al.,
TPAMI 2022; official code ``LUSSeg/PASS``, ``src/utils.py::mask_to_boundary`` called per class by
``src/singlecropdataset.py::EvalDataset.get_boundary_mask``) defines, for each class of a label map:

- the width ``d = round(0.03 · √(H² + W²))``, at least 1 (:func:`boundary_width`);
- the class's inner boundary: its pixels minus its mask eroded ``d`` times by a 3×3 square, the mask
  padded by one pixel of background first, so that a region cut by the image border has a boundary there.

``d`` erosions by a 3×3 square are one erosion by a (2d+1)×(2d+1) square, and the classes of a label map
partition it, so a pixel is on the inner boundary of its own class exactly when its (2d+1)×(2d+1)
window leaves the image or holds another label: :func:`inner_boundary` tests that for all classes at
once with a minimum and a maximum filter (separable, O(1) per pixel whatever ``d``). Every label
value is a class here, the ignore id 1000 included (class pixels next to ignore pixels are boundary).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

BOUNDARY_RATIO = 0.03
"""Boundary width as a fraction of the image diagonal (ImageNet-S, after Boundary IoU)."""


def boundary_width(height: int, width: int, ratio: float = BOUNDARY_RATIO) -> int:
    """``d = round(ratio · √(H² + W²))``, at least 1 (Python's round: halves go to the even integer)."""
    return max(1, int(round(ratio * math.sqrt(height**2 + width**2))))


def inner_boundary(ids: np.ndarray, ratio: float = BOUNDARY_RATIO) -> np.ndarray:
    """H×W non-negative integer labels → H×W bool: ``True`` where a pixel lies within chessboard
    distance ``d`` (:func:`boundary_width`) of a pixel with another label or of the image border."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"expected an H×W label map, got shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {ids.dtype}")
    if ids.size and ids.min() < 0:
        raise ValueError(f"labels must be non-negative, got {ids.min()}")
    window = 2 * boundary_width(*ids.shape, ratio=ratio) + 1
    # Shift labels to >= 1 so that the constant 0 outside the image differs from every label.
    dtype = np.uint16 if ids.size == 0 or ids.max() < np.iinfo(np.uint16).max else np.int64
    shifted = ids.astype(dtype) + dtype(1)
    low = ndimage.minimum_filter(shifted, size=window, mode="constant", cval=0)
    high = ndimage.maximum_filter(shifted, size=window, mode="constant", cval=0)
    return low != high
