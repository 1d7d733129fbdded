"""The ImageNet-S evaluation and its command line: mIoU with 'other', boundary mIoU, Img-Acc,
F-measure, mIoU by object size, and the image-level presence matching of the unsupervised protocol.

Gao et al., "Large-scale Unsupervised Semantic Segmentation" (TPAMI 2022). Label files are
``<class>/<name>.png``, RGB with ``id = R + 256·G``: 0 'other', 1..K the categories, 1000 ignore.
Facts taken from the official code (``LUSSeg/ImageNet-S``: ``evaluation/evaluator.py``,
``evaluation/metric.py``, ``evaluation/match.py``; ``LUSSeg/PASS``: ``evaluator.py``, ``src/metric.py``,
``src/singlecropdataset.py``, ``src/utils.py``):

- every file of the ground-truth folder is evaluated, at its own resolution; pixels whose ground truth
  is 1000 are removed from both maps, *after* the boundaries are computed on the full maps;
- counts accumulate over the whole set: IoU_c = TP_c / (TP_c + FP_c + FN_c) for the K + 1 classes,
  'other' included; **mIoU** is their plain mean, a class with neither ground truth nor prediction
  counting as 0 (every class occurs in the official validation and test sets);
- **b_mIoU**: the same on the inner boundaries of :mod:`course_lib.evaluation.boundary` (width 0.03 of
  the image diagonal): a pixel counts for class c in a map when it has label c there and lies on the
  boundary of c in that map;
- **img_acc**: the image's predicted category is the one (not 'other') with the most predicted pixels
  (the lowest id on a tie); it is correct when both the prediction and the ground truth have pixels of
  it; averaged over images;
- **f_measure**: per image, foreground = not 'other' in each map, F = (1 + β²)·P·R / (β²·P + R) with
  β² = 0.3, and F = 0 when no pixel is foreground in both maps; averaged over images;
- **mIoU_S / _MS / _ML / _L**: per image, each ground-truth category present falls into a size bucket by
  its share of the image's non-ignore pixels: at most 5 %, 25 %, 50 %, or more; for every non-empty
  bucket the 'other' pixels and the pixels of that bucket's categories are scored as for mIoU and the
  counts accumulate per bucket; the bucket's mIoU averages the classes with ground-truth pixels in it
  (``None`` when no object of that size occurs, where the official code gives NaN);
- **matching** (fully unsupervised protocol): per image, the sets of predicted and of ground-truth
  categories present among the non-ignore pixels (any number of pixels, 'other' excluded); the K×K
  matrix of how many images have predicted id i and ground-truth id j; the Hungarian assignment
  maximising it maps predicted ids to ground-truth ids; 0 maps to 0. (The official code uses Munkres,
  here ``scipy.optimize.linear_sum_assignment``: only ties can be broken differently.)

A predicted 1000 means "no class": it counts for no class (a miss where the ground truth has one) and,
as in the official F-measure, as foreground. Counts are exact int64 sums (the official float32
accumulators round above 2²⁴ pixels); size buckets compare integers (100·n_c ≤ 5·n, ...).

Speed: the files are decoded straight to 16-bit ids (:func:`~course_lib.data.label_png.read_imagenet_s_png`
with ``dtype=np.uint16``), and everything else an image needs comes from one ``bincount`` of its ground
truth and one of a per-pixel code (ground-truth row, predicted column, the two boundary bits) built with
two table look-ups (which also reject unknown ids, so no separate range checks); the boundaries are
boolean array operations (:mod:`.boundary`). Reading the two PNGs is most of the time per image. Folders
are scored in a process pool; the module imports only NumPy, Pillow and the course's light modules
(SciPy's assignment solver is loaded by the matching alone), so the command starts in a fraction of a
second.

Command line::

    python -m course_lib.evaluation.imagenet_s match --predict-dir P --gt-dir G --num-classes K --out M.json
    python -m course_lib.evaluation.imagenet_s evaluate --predict-dir P --gt-dir G --num-classes K \\
        [--match M.json] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar

import numpy as np

from ..cli import ArgumentParser, int_range, positive_int, prepare_out, write_json
from ..config import ConfigError, progress
from ..data.label_png import IMAGENET_S_IGNORE, IMAGENET_S_OTHER, LabelEncodingError, read_imagenet_s_png
from .boundary import inner_boundary

METRIC_KEYS = ("mIoU", "b_mIoU", "img_acc", "f_measure", "mIoU_S", "mIoU_MS", "mIoU_ML", "mIoU_L")
"""Keys of :meth:`ImageNetSEvaluator.compute` and of the CLI's JSON, all in percent."""

SIZE_BUCKETS = (("S", 5), ("MS", 25), ("ML", 50), ("L", 100))
"""Object-size buckets: name and the largest share (percent of non-ignore pixels) of an object in it."""

F_BETA_SQUARED = 0.3
"""β² of the F-measure (the official code calls it ``beta``)."""

Match = Mapping[int, int]
PredictionTransform = Callable[..., np.ndarray]  # (pred, gt, name=...) → pred, applied before scoring
T = TypeVar("T")

_ID_VALUES = 1 << 16
"""Every id an ``R + 256·G`` PNG can hold (0..65535): the size of the id → column tables."""


def _as_array(ids, what: str) -> np.ndarray:
    """An H×W integer NumPy array from a NumPy array or a (CPU or GPU) torch tensor."""
    if hasattr(ids, "detach"):
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"{what}: expected an H×W id map, got shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{what}: ids must be integers, got dtype {ids.dtype}")
    return ids


def _bad_ids(ids: np.ndarray, bad: np.ndarray) -> str:
    values = np.unique(ids[bad])
    return f"{values[:5].tolist()}{' ...' if values.size > 5 else ''}"


def _check_num_classes(num_classes: int) -> int:
    if not isinstance(num_classes, (int, np.integer)) or not 1 <= num_classes < IMAGENET_S_IGNORE:
        raise ValueError(f"num_classes must be an integer in 1..{IMAGENET_S_IGNORE - 1}, got {num_classes!r}")
    return int(num_classes)


def _check_pair(pred: np.ndarray, gt: np.ndarray, name: str) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"{name}: the prediction is {pred.shape[0]}×{pred.shape[1]} (height×width) but its "
                         f"ground truth is {gt.shape[0]}×{gt.shape[1]}; predict at the original resolution")


def _as_uint16(ids: np.ndarray) -> np.ndarray | None:
    """``ids`` as ``uint16`` (themselves when they already are), ``None`` when one lies outside 0..65535."""
    if ids.dtype == np.uint16:
        return ids
    if ids.size and (ids.min() < 0 or ids.max() >= _ID_VALUES):
        return None
    return ids.astype(np.uint16)


def _ground_truth_error(gt: np.ndarray, num_classes: int, name: str) -> LabelEncodingError:
    bad = (gt < 0) | ((gt > num_classes) & (gt != IMAGENET_S_IGNORE))
    return LabelEncodingError(f"{name}: ground-truth ids {_bad_ids(gt, bad)} are outside 0..{num_classes} "
                              f"and not the ignore id {IMAGENET_S_IGNORE} (num_classes={num_classes}: "
                              "is it the right subset?)")


def _joint_counts(pred: np.ndarray, gt: np.ndarray, num_classes: int, column_codes: np.ndarray, n_columns: int,
                  gt_name: str, boundaries: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The counts one image contributes, from two ``bincount`` calls over H×W ``uint16`` id maps.

    ``column_codes`` maps every predicted id (0..65535) to its column in ``0..n_columns - 1``, times 4
    when ``boundaries``. Returns the pixel count of every ground-truth id 0..1000 (checked to be 0..K or
    1000), the ids 0..K present in ``gt``, and the histogram of (ground-truth row: the present ids, then
    one row for ignore pixels; predicted column; with ``boundaries`` also ground truth on its inner
    boundary, prediction on the inner boundary of its columns), shape ``(rows, n_columns[, 2, 2])``.
    """
    id_counts = np.bincount(gt.reshape(-1).astype(np.intp), minlength=IMAGENET_S_IGNORE + 1)  # (faster cast)
    if id_counts.size > IMAGENET_S_IGNORE + 1 or id_counts[num_classes + 1:IMAGENET_S_IGNORE].any():
        raise _ground_truth_error(gt, num_classes, gt_name)
    present = np.flatnonzero(id_counts[: num_classes + 1])
    row_size = n_columns * (4 if boundaries else 1)
    row_codes = np.full(IMAGENET_S_IGNORE + 1, present.size * row_size, np.int32)  # ignore: the last row
    row_codes[present] = np.arange(present.size, dtype=np.int32) * row_size
    code = np.take(row_codes, gt)  # np.take: 3× faster than fancy indexing with uint16 indices
    columns = np.take(column_codes, pred)
    code += columns
    if boundaries:
        bits = np.left_shift(inner_boundary(gt).view(np.uint8), 1)
        bits |= inner_boundary(columns).view(np.uint8)
        code += bits
    histogram = np.bincount(code.ravel(), minlength=(present.size + 1) * row_size)
    shape = (present.size + 1, n_columns) + ((2, 2) if boundaries else ())
    return id_counts, present, histogram.reshape(shape)


@functools.lru_cache(maxsize=8)
def _identity_columns(num_classes: int) -> np.ndarray:
    """Predicted id → column for presence matching: 0..K themselves, 1000 → K + 1, any other id → K + 2."""
    columns = np.full(_ID_VALUES, num_classes + 2, np.uint16)
    columns[: num_classes + 1] = np.arange(num_classes + 1)
    columns[IMAGENET_S_IGNORE] = num_classes + 1
    columns.flags.writeable = False
    return columns


class ImageNetSEvaluator:
    """Accumulates the ImageNet-S metrics over a set of images (see the module docstring).

    Args:
        num_classes: ``K``, the number of categories (50, 300 or 919 for ImageNet-S); ids are 0..K.
        match: optional predicted id → ground-truth id map applied to predictions first (keys up to
            999, values 0..K; 0 must map to 0); every predicted id other than 0 and 1000 must be a key.

    ``update(pred_ids, gt_ids)`` takes one image (H×W integer arrays or tensors, 1000 = ignore in the
    ground truth); ``compute()`` returns :data:`METRIC_KEYS` → percent. Evaluators of disjoint image
    sets can be combined with :meth:`merge` (used by :func:`evaluate_folders` across processes).
    """

    def __init__(self, num_classes: int, match: Match | None = None):
        self.num_classes = _check_num_classes(num_classes)
        self.match = None if match is None else check_match(match, self.num_classes)
        self._column_codes = self._build_column_codes()
        self.reset()

    def _build_column_codes(self) -> np.ndarray:
        """Predicted id (0..65535) → 4 × internal column: 0..K a class (match applied), K + 1 "no class"
        (a predicted 1000), K + 2 an invalid id. Times 4 leaves room for the two boundary bits."""
        k = self.num_classes
        columns = np.full(_ID_VALUES, k + 2, np.uint16)
        if self.match is None:
            columns[: k + 1] = np.arange(k + 1)
        else:
            columns[list(self.match)] = list(self.match.values())
        columns[IMAGENET_S_IGNORE] = k + 1
        return columns * np.uint16(4)

    def __getstate__(self) -> dict:
        # The 128 KiB table is rebuilt from the match rather than sent between processes.
        return {key: value for key, value in self.__dict__.items() if key != "_column_codes"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._column_codes = self._build_column_codes()

    def reset(self) -> None:
        """Forget every image seen so far."""
        k1 = self.num_classes + 1
        self.n_images = 0
        self.gt_area, self.pred_area, self.intersection = (np.zeros(k1, np.int64) for _ in range(3))
        self.gt_boundary, self.pred_boundary, self.boundary_intersection = (np.zeros(k1, np.int64) for _ in range(3))
        self.size_gt, self.size_pred, self.size_intersection = (
            np.zeros((len(SIZE_BUCKETS), k1), np.int64) for _ in range(3))
        self.f_measure_sum = 0.0
        self.n_correct_images = 0

    def _prediction_error(self, pred: np.ndarray, name: str) -> ValueError:
        """The error for predicted ids that are neither classes (or match keys) nor 1000."""
        bad = (pred < 0) | (pred >= _ID_VALUES)
        valid = ~bad
        bad[valid] = self._column_codes[pred[valid]] == 4 * (self.num_classes + 2)
        if self.match is None:
            return ValueError(f"{name}: predicted ids {_bad_ids(pred, bad)} are outside 0..{self.num_classes} "
                              f"and not {IMAGENET_S_IGNORE} (num_classes={self.num_classes}); "
                              "map cluster ids to categories first (match)")
        return ValueError(f"{name}: predicted ids {_bad_ids(pred, bad)} are not keys of the match "
                          f"(it maps {len(self.match)} ids)")

    def update(self, pred_ids, gt_ids, name: str = "image") -> None:
        """Add one image: ``pred_ids`` and ``gt_ids`` are H×W integer maps (``name`` appears in errors)."""
        pred, gt = _as_array(pred_ids, f"{name} (prediction)"), _as_array(gt_ids, f"{name} (ground truth)")
        _check_pair(pred, gt, name)
        small_gt = _as_uint16(gt)
        if small_gt is None:
            raise _ground_truth_error(gt, self.num_classes, name)
        small_pred = _as_uint16(pred)
        if small_pred is None:
            raise self._prediction_error(pred, name)
        self._add(small_pred, small_gt, name, name)

    def _add(self, pred: np.ndarray, gt: np.ndarray, pred_name: str, gt_name: str) -> None:
        """:meth:`update` on two H×W ``uint16`` maps of the same shape (the folder path reads them so)."""
        k, k1 = self.num_classes, self.num_classes + 1
        id_counts, present, histogram = _joint_counts(pred, gt, k, self._column_codes, k + 3, gt_name,
                                                      boundaries=True)
        if histogram[:, k + 2].any():
            raise self._prediction_error(pred, pred_name)
        # Rows: the ground-truth classes present (ignore pixels dropped); columns 0..K, then K + 1 for a
        # predicted 1000 ("no class"); then gt on its boundary, prediction on its boundary.
        histogram = histogram[:-1, : k + 2]
        confusion = histogram.sum(axis=(2, 3))
        rows = np.arange(present.size)

        gt_area = id_counts[:k1]
        pred_area = confusion.sum(axis=0)[:k1]
        intersection = np.zeros(k1, np.int64)
        intersection[present] = confusion[rows, present]
        self.gt_area += gt_area
        self.pred_area += pred_area
        self.intersection += intersection
        self.gt_boundary[present] += histogram[:, :, 1, :].sum(axis=(1, 2))
        self.pred_boundary += histogram[:, :, :, 1].sum(axis=(0, 2))[:k1]
        self.boundary_intersection[present] += histogram[rows, present, 1, 1]

        # F-measure: foreground = not 'other' (a predicted 1000 is foreground, as in the official code).
        n_pixels = gt_area.sum()
        true_fg = n_pixels - gt_area[IMAGENET_S_OTHER]
        pred_fg = n_pixels - pred_area[IMAGENET_S_OTHER]
        hits = confusion[present != IMAGENET_S_OTHER, 1:].sum()
        if hits > 0:
            precision, recall = hits / pred_fg, hits / true_fg
            self.f_measure_sum += (1 + F_BETA_SQUARED) * precision * recall / (F_BETA_SQUARED * precision + recall)

        label = 1 + int(np.argmax(pred_area[1:]))
        self.n_correct_images += int(gt_area[label] > 0 and pred_area[label] > 0)

        # Size buckets: bucket index of each category present, 'other' joins every non-empty bucket.
        is_category = present != IMAGENET_S_OTHER
        shares = 100 * gt_area[present[is_category]]
        bucket = sum((shares > limit * n_pixels).astype(np.int64) for _, limit in SIZE_BUCKETS[:-1])
        members = np.zeros((len(SIZE_BUCKETS), present.size), bool)
        members[bucket, np.flatnonzero(is_category)] = True
        members[:, ~is_category] = members.any(axis=1, keepdims=True)
        self.size_pred += members.astype(np.int64) @ confusion[:, :k1]
        self.size_gt[:, present] += members * gt_area[present]
        self.size_intersection[:, present] += members * intersection[present]

        self.n_images += 1

    def merge(self, other: "ImageNetSEvaluator") -> "ImageNetSEvaluator":
        """Add the counts of ``other`` (another set of images, same ``num_classes``); returns ``self``."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge evaluators of {self.num_classes} and {other.num_classes} classes")
        for attribute in ("gt_area", "pred_area", "intersection", "gt_boundary", "pred_boundary",
                          "boundary_intersection", "size_gt", "size_pred", "size_intersection"):
            getattr(self, attribute).__iadd__(getattr(other, attribute))
        self.f_measure_sum += other.f_measure_sum
        self.n_correct_images += other.n_correct_images
        self.n_images += other.n_images
        return self

    @staticmethod
    def _iou(intersection: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
        union = gt + pred - intersection
        return np.divide(intersection, union, out=np.zeros(union.shape), where=union > 0)

    @property
    def class_iou(self) -> np.ndarray:
        """(K+1,) IoU per class in percent ('other' first; 0 where a class has no pixel at all)."""
        return 100 * self._iou(self.intersection, self.gt_area, self.pred_area)

    def compute(self) -> dict[str, float | None]:
        """The metrics of :data:`METRIC_KEYS` in percent (a size bucket without objects gives ``None``)."""
        if self.n_images == 0:
            raise ValueError("no image was evaluated: call update() (or check the ground-truth folder) first")
        scores: dict[str, float | None] = {
            "mIoU": float(self.class_iou.mean()),
            "b_mIoU": float(100 * self._iou(self.boundary_intersection, self.gt_boundary, self.pred_boundary).mean()),
            "img_acc": 100 * self.n_correct_images / self.n_images,
            "f_measure": float(100 * self.f_measure_sum / self.n_images),
        }
        bucket_iou = self._iou(self.size_intersection, self.size_gt, self.size_pred)
        for (bucket, _), iou, gt in zip(SIZE_BUCKETS, bucket_iou, self.size_gt):
            scores[f"mIoU_{bucket}"] = float(100 * iou[gt > 0].mean()) if (gt > 0).any() else None
        return scores


def check_match(match: Match, num_classes: int) -> dict[int, int]:
    """Validate a predicted id → ground-truth id map; returns it with int keys and 0 → 0 added."""
    checked: dict[int, int] = {}
    for key, value in match.items():
        try:
            source, target = int(key), int(value)
        except (TypeError, ValueError):
            raise ValueError(f"match entries must be integer ids, got {key!r}: {value!r}") from None
        if not 0 <= source < IMAGENET_S_IGNORE:
            raise ValueError(f"match key {source} is not a predicted id in 0..{IMAGENET_S_IGNORE - 1}")
        if not 0 <= target <= num_classes:
            raise ValueError(f"match maps {source} to {target}, outside the ground-truth ids 0..{num_classes}")
        checked[source] = target
    if checked.setdefault(IMAGENET_S_OTHER, IMAGENET_S_OTHER) != IMAGENET_S_OTHER:
        raise ValueError(f"match maps 'other' (0) to {checked[0]}; 0 must map to 0")
    return dict(sorted(checked.items()))


def load_match(path: str | os.PathLike, num_classes: int) -> dict[int, int]:
    """Read a match JSON (``{"predicted id": ground-truth id, ...}``) and validate it."""
    path = Path(path)
    try:
        match = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"match file {path} does not exist; create it with the 'match' command") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(match, dict):
        raise ValueError(f"{path}: expected a JSON object mapping predicted ids to ground-truth ids")
    return check_match(match, num_classes)


def save_match(match: Match, path: str | os.PathLike) -> None:
    """Write a match as JSON with string keys (``{"0": 0, "1": 17, ...}``), atomically (creates folders)."""
    write_json(path, {str(key): int(value) for key, value in match.items()})


def _presence(pred: np.ndarray, gt: np.ndarray, num_classes: int, pred_name: str,
              gt_name: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`image_presence` on two H×W ``uint16`` maps of the same shape."""
    id_counts, _, histogram = _joint_counts(pred, gt, num_classes, _identity_columns(num_classes), num_classes + 3,
                                            gt_name, boundaries=False)
    if histogram[:, num_classes + 2].any():
        bad = (pred > num_classes) & (pred != IMAGENET_S_IGNORE)
        raise ValueError(f"{pred_name}: predicted ids {_bad_ids(pred, bad)} are outside 0..{num_classes} "
                         f"(num_classes={num_classes}); presence matching maps K cluster ids 1..K to K categories")
    return histogram[:-1, : num_classes + 1].any(axis=0), id_counts[: num_classes + 1] > 0


def image_presence(pred_ids, gt_ids, num_classes: int, name: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Which ids occur in one image's non-ignore pixels: two (K+1,) bool vectors (prediction, ground truth).

    Predicted ids must lie in 0..K (1000 is allowed and counts as none)."""
    pred, gt = _as_array(pred_ids, f"{name} (prediction)"), _as_array(gt_ids, f"{name} (ground truth)")
    _check_pair(pred, gt, name)
    small_gt = _as_uint16(gt)
    if small_gt is None:
        raise _ground_truth_error(gt, num_classes, name)
    small_pred = _as_uint16(pred)
    if small_pred is None:
        bad = (pred < 0) | ((pred > num_classes) & (pred != IMAGENET_S_IGNORE))
        raise ValueError(f"{name}: predicted ids {_bad_ids(pred, bad)} are outside 0..{num_classes} "
                         f"(num_classes={num_classes}); presence matching maps K cluster ids 1..K to K categories")
    return _presence(small_pred, small_gt, num_classes, name, name)


def match_from_presence(pred_present: np.ndarray, gt_present: np.ndarray) -> dict[int, int]:
    """Hungarian presence matching from N×(K+1) bool matrices (image × id, column 0 'other').

    Maximises, over one-to-one maps of predicted ids 1..K to ground-truth ids 1..K, the number of
    (image, predicted id, matched id) where both ids occur; returns ``{0: 0, predicted: ground truth}``.
    """
    pred_present, gt_present = np.asarray(pred_present, bool), np.asarray(gt_present, bool)
    if pred_present.ndim != 2 or pred_present.shape != gt_present.shape or pred_present.shape[1] < 2:
        raise ValueError(f"expected two N×(K+1) presence matrices of the same shape, got "
                         f"{pred_present.shape} and {gt_present.shape}")
    from scipy.optimize import linear_sum_assignment  # loaded here: evaluating alone never needs SciPy

    co_occurrence = pred_present[:, 1:].T.astype(np.int64) @ gt_present[:, 1:].astype(np.int64)
    rows, columns = linear_sum_assignment(co_occurrence, maximize=True)
    return {IMAGENET_S_OTHER: IMAGENET_S_OTHER, **{int(r) + 1: int(c) + 1 for r, c in zip(rows, columns)}}


def _layout_error(message: str) -> Exception:
    """A :class:`~course_lib.data.folders.DatasetLayoutError` (its module, which needs torch, is loaded only
    to report the error)."""
    from ..data.folders import DatasetLayoutError

    return DatasetLayoutError(message)


def _is_png(path: Path) -> bool:
    return path.suffix.lower() == ".png"


def _prediction_path(predict_dir: Path, relative: Path) -> Path:
    """``P/<class>/<name>.png`` for the ground truth ``relative``; the suffix's case may differ
    (``x.PNG`` against ``x.png``). The exact name when no variant exists (it is then reported missing)."""
    exact = predict_dir / relative
    if exact.is_file():
        return exact
    for suffix in (".png", ".PNG"):
        variant = exact.with_suffix(suffix)
        if variant.is_file():
            return variant
    return exact


def list_label_pairs(predict_dir: str | os.PathLike, gt_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Every ``G/<class>/<name>.png`` (``.PNG`` too) with its prediction ``P/<class>/<name>.png``, sorted.

    Raises :class:`~course_lib.data.folders.DatasetLayoutError` for a missing or empty ground-truth
    folder and for missing predictions (naming the first one and how many are missing)."""
    predict_dir, gt_dir = Path(predict_dir), Path(gt_dir)
    for folder, what in ((gt_dir, "ground-truth"), (predict_dir, "prediction")):
        if not folder.is_dir():
            raise _layout_error(f"the {what} folder {folder} does not exist")
    gt_files = sorted(path for path in gt_dir.glob("*/*") if _is_png(path))
    if not gt_files:
        flat = sum(1 for path in gt_dir.glob("*") if _is_png(path))
        hint = f" (it has {flat} PNGs at its top level: put them in <class>/ sub-folders)" if flat else ""
        raise _layout_error(f"no ground-truth labels <class>/<name>.png in {gt_dir}{hint}")
    pairs = [(_prediction_path(predict_dir, gt.relative_to(gt_dir)), gt) for gt in gt_files]
    missing = [pred for pred, _ in pairs if not pred.is_file()]
    if missing:
        raise _layout_error(f"{len(missing)} of {len(pairs)} predictions are missing, e.g. {missing[0]} "
                            f"(for {gt_dir / missing[0].relative_to(predict_dir)}); every ground-truth "
                            "file needs a prediction with the same <class>/<name>.png")
    return pairs


def _read_pair(pred_path: Path, gt_path: Path, unreadable: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Both label maps as ``uint16``, or ``None`` after adding the message of each unreadable file to
    ``unreadable`` (so that one pass names them all)."""
    pair = []
    for path in (pred_path, gt_path):
        try:
            pair.append(read_imagenet_s_png(path, dtype=np.uint16))
        except LabelEncodingError as error:
            unreadable.append(str(error))
    return (pair[0], pair[1]) if len(pair) == 2 else None


def _evaluate_chunk(pairs: Sequence[tuple[Path, Path]], num_classes: int, match: Match | None,
                    transform: PredictionTransform | None = None) -> tuple[ImageNetSEvaluator, list[str]]:
    """Score ``pairs``; also returns the messages of the files that could not be read (then not scored)."""
    evaluator = ImageNetSEvaluator(num_classes, match)
    unreadable: list[str] = []
    for pred_path, gt_path in pairs:
        pair = _read_pair(pred_path, gt_path, unreadable)
        if pair is None or unreadable:  # once a file is unreadable, only look for the others
            continue
        pred, gt = pair
        if transform is not None:
            evaluator.update(transform(pred, gt, name=str(pred_path)), gt, name=str(pred_path))
        else:
            _check_pair(pred, gt, str(pred_path))
            evaluator._add(pred, gt, str(pred_path), str(gt_path))
    return evaluator, unreadable


def _presence_chunk(pairs: Sequence[tuple[Path, Path]], num_classes: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Presence vectors of ``pairs`` stacked (N×(K+1) each), and the messages of the unreadable files."""
    presence, unreadable = [], []
    for pred_path, gt_path in pairs:
        pair = _read_pair(pred_path, gt_path, unreadable)
        if pair is None or unreadable:
            continue
        _check_pair(*pair, str(pred_path))
        presence.append(_presence(*pair, num_classes, str(pred_path), str(gt_path)))
    stack = [np.array([vectors[i] for vectors in presence], bool).reshape(-1, num_classes + 1) for i in (0, 1)]
    return stack[0], stack[1], unreadable


def _check_readable(unreadable: list[str], n_pairs: int) -> None:
    """Raise one :class:`LabelEncodingError` that names every unreadable file (the first 10 in full)."""
    if unreadable:
        shown = "; ".join(unreadable[:10]) + (f"; and {len(unreadable) - 10} more" if len(unreadable) > 10 else "")
        raise LabelEncodingError(f"{len(unreadable)} of the {2 * n_pairs} label files ({n_pairs} pairs) are not "
                                 f"readable ImageNet-S PNGs: {shown}")


def default_workers() -> int:
    """Number of CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _map_chunks(function: Callable[..., T], pairs: list[tuple[Path, Path]], workers: int | None,
                desc: str, **kwargs) -> list[T]:
    """``function(chunk, **kwargs)`` over chunks of ``pairs`` in a process pool; results in input order."""
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    size = max(1, min(32, -(-len(pairs) // (4 * workers))))
    chunks = [pairs[start:start + size] for start in range(0, len(pairs), size)]
    results = []
    with progress(total=len(pairs), desc=desc, unit="img") as bar:
        if workers == 1 or len(chunks) == 1:
            for chunk in chunks:
                results.append(function(chunk, **kwargs))
                bar.update(len(chunk))
            return results
        pool = ProcessPoolExecutor(min(workers, len(chunks)))
        try:
            futures = [pool.submit(function, chunk, **kwargs) for chunk in chunks]
            for future, chunk in zip(futures, chunks):
                results.append(future.result())
                bar.update(len(chunk))
        finally:
            pool.shutdown(cancel_futures=True)
    return results


def score_folders(predict_dir: str | os.PathLike, gt_dir: str | os.PathLike, num_classes: int,
                  match: Match | None = None, workers: int | None = None,
                  transform: PredictionTransform | None = None) -> ImageNetSEvaluator:
    """:func:`evaluate_folders` before :meth:`~ImageNetSEvaluator.compute`: the evaluator holding the counts
    of every image (``n_images`` says how many were scored)."""
    num_classes = _check_num_classes(num_classes)
    checked = None if match is None else check_match(match, num_classes)
    pairs = list_label_pairs(predict_dir, gt_dir)
    parts = _map_chunks(_evaluate_chunk, pairs, workers, "evaluating", num_classes=num_classes, match=checked,
                        transform=transform)
    _check_readable([message for _, unreadable in parts for message in unreadable], len(pairs))
    total = parts[0][0]
    for part, _ in parts[1:]:
        total.merge(part)
    return total


def evaluate_folders(predict_dir: str | os.PathLike, gt_dir: str | os.PathLike, num_classes: int,
                     match: Match | None = None, workers: int | None = None,
                     transform: PredictionTransform | None = None) -> dict[str, float | None]:
    """Evaluate every ``G/<class>/<name>.png`` against ``P/<class>/<name>.png`` (ImageNet-S PNGs).

    ``match`` (predicted id → ground-truth id, e.g. from :func:`presence_matching`) is applied to the
    predictions first; ``workers`` processes read and score the images (default: all cores).
    ``transform(pred, gt, name=...)`` (a picklable function), when given, rewrites each prediction before
    scoring, e.g. a diagnostic such as :func:`course_lib.luss.labels.foreground_as_true_category`.
    Returns :data:`METRIC_KEYS` → percent, see :class:`ImageNetSEvaluator`. Files that cannot be read
    raise one :class:`~course_lib.data.label_png.LabelEncodingError` naming all of them.
    """
    return score_folders(predict_dir, gt_dir, num_classes, match, workers, transform).compute()


def folder_presence(predict_dir: str | os.PathLike, gt_dir: str | os.PathLike, num_classes: int,
                    workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`image_presence` of every pair of two folders: two N×(K+1) bool matrices (prediction, ground
    truth), in the order of :func:`list_label_pairs`."""
    num_classes = _check_num_classes(num_classes)
    pairs = list_label_pairs(predict_dir, gt_dir)
    parts = _map_chunks(_presence_chunk, pairs, workers, "matching", num_classes=num_classes)
    _check_readable([message for *_, unreadable in parts for message in unreadable], len(pairs))
    return np.concatenate([p for p, _, _ in parts]), np.concatenate([g for _, g, _ in parts])


def presence_matching(predict_dir: str | os.PathLike, gt_dir: str | os.PathLike, num_classes: int,
                      workers: int | None = None) -> dict[int, int]:
    """The fully unsupervised protocol's matching of predicted ids to categories over two folders
    (see :func:`match_from_presence`); predicted ids must lie in 0..K."""
    return match_from_presence(*folder_presence(predict_dir, gt_dir, num_classes, workers))


def format_scores(scores: Mapping[str, float | None]) -> str:
    """The metrics as an aligned two-column text table."""
    return "\n".join(f"{key:<10}{'n/a' if scores[key] is None else f'{scores[key]:7.2f}'}" for key in METRIC_KEYS)


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m course_lib.evaluation.imagenet_s",
        description="ImageNet-S evaluation (mIoU, boundary mIoU, Img-Acc, F-measure, mIoU by object size) "
                    "and the unsupervised presence matching, on <class>/<name>.png label folders (id = R + 256·G).")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("evaluate", "score predictions against the ground truth"),
                            ("match", "match predicted ids to categories (Hungarian on image-level presence)")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--predict-dir", required=True, type=Path, help="predictions P/<class>/<name>.png")
        command.add_argument("--gt-dir", required=True, type=Path, help="ground truth G/<class>/<name>.png")
        command.add_argument("--num-classes", required=True, type=int_range(1, IMAGENET_S_IGNORE - 1),
                             help="K (50, 300 or 919 for ImageNet-S)")
        command.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
        if name == "evaluate":
            command.add_argument("--match", type=Path, help="JSON from the 'match' command, applied first")
            command.add_argument("--json", type=Path, help="also write the scores to this JSON file")
        else:
            command.add_argument("--out", required=True, type=Path, help="where to write the match JSON")
    return parser


def _check_output_file(path: Path, flag: str, example: str) -> None:
    """Fail before any work when ``path`` cannot become a file: it is a folder, or its folder cannot be
    created or written (a :class:`~course_lib.config.ConfigError` naming ``flag``)."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder: give a file name, e.g. {path / example}")
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(f"{flag} {path}: {path.parent} is a file, not a folder: give another {flag}")
    prepare_out(path.parent, flag)  # creates the folder and checks that it can be written


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 with a one-line message on bad input).

    Arguments and output paths are checked before any image is read; the files written (``--out``,
    ``--json``) appear complete or not at all."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "match":
            _check_output_file(args.out, "--out", "match.json")
            pred_present, gt_present = folder_presence(args.predict_dir, args.gt_dir, args.num_classes,
                                                       workers=args.workers)
            match = match_from_presence(pred_present, gt_present)
            save_match(match, args.out)
            print(f"matched {len(match) - 1} predicted ids to categories over {len(pred_present)} images "
                  f"-> {args.out}")
            return 0
        if args.json is not None:
            _check_output_file(args.json, "--json", "scores.json")
        match = None if args.match is None else load_match(args.match, args.num_classes)
        total = score_folders(args.predict_dir, args.gt_dir, args.num_classes, match=match, workers=args.workers)
        scores = total.compute()
        print(f"scored {total.n_images} images ({args.predict_dir} against {args.gt_dir})")
        print(format_scores(scores))
        if args.json is not None:
            write_json(args.json, scores)
    except (OSError, ValueError) as error:  # missing files; encodings, sizes, ids (LabelEncodingError); options
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
