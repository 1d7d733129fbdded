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
window leaves the image or holds another label. Every label value is a class here, the ignore id 1000
included (class pixels next to ignore pixels are boundary).

:func:`inner_boundary` tests that for all classes at once with boolean operations only. A window inside
the image holds one label exactly when each of its rows does and its centre column does; a row of the
window holds one label when none of its ``2d`` pairs of horizontal neighbours differ. "Any of ``n``
consecutive flags" is computed for every position by doubling spans (``any`` over 1, 2, 4, ... flags,
then two overlapping spans), about ``log2(n)`` array-wide ORs, so the cost per pixel is a few byte
operations whatever ``d`` (ImageNet-S images have ``d`` ≈ 19).
"""
from __future__ import annotations

import math

import numpy as np

BOUNDARY_RATIO = 0.03
"""Boundary width as a fraction of the image diagonal (ImageNet-S, after Boundary IoU)."""


def boundary_width(height: int, width: int, ratio: float = BOUNDARY_RATIO) -> int:
    """``d = round(ratio · √(H² + W²))``, at least 1 (Python's round: halves go to the even integer)."""
    return max(1, int(round(ratio * math.sqrt(height**2 + width**2))))


def _any_in_runs(flags: np.ndarray, length: int, axis: int) -> np.ndarray:
    """``out[i] = flags[i : i + length].any()`` along ``axis`` (``length`` ≥ 1; ``n - length + 1`` values)."""
    def part(array: np.ndarray, start: int, stop: int | None) -> np.ndarray:
        return array[start:stop] if axis == 0 else array[:, start:stop]

    span = 1  # invariant: spans[i] = any(flags[i : i + span])
    spans = flags
    while 2 * span <= length:
        spans = part(spans, 0, -span) | part(spans, span, None)
        span *= 2
    if span == length:
        return spans
    count = flags.shape[axis] - length + 1
    return part(spans, 0, count) | part(spans, length - span, length - span + count)


def inner_boundary(ids: np.ndarray, ratio: float = BOUNDARY_RATIO) -> np.ndarray:
    """H×W non-negative integer labels → H×W bool: ``True`` where a pixel lies within chessboard
    distance ``d`` (:func:`boundary_width`) of a pixel with another label or of the image border."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"expected an H×W label map, got shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {ids.dtype}")
    if ids.dtype.kind == "i" and ids.size and ids.min() < 0:
        raise ValueError(f"labels must be non-negative, got {ids.min()}")
    height, width = ids.shape
    d = boundary_width(height, width, ratio=ratio)
    boundary = np.ones((height, width), bool)  # every window that leaves the image
    if height > 2 * d and width > 2 * d:
        # Window rows: pairs (x', x' + 1) with x - d <= x' < x + d, for the centres x = d .. W - 1 - d.
        mixed_rows = _any_in_runs(ids[:, 1:] != ids[:, :-1], 2 * d, axis=1)
        columns = ids[:, d:width - d]
        mixed_centre = _any_in_runs(columns[1:] != columns[:-1], 2 * d, axis=0)
        mixed = _any_in_runs(mixed_rows, 2 * d + 1, axis=0)
        mixed |= mixed_centre
        boundary[d:height - d, d:width - d] = mixed
    return boundary
