"""Checks of lesson 00 (the ImageNet-S label encoding, Hungarian matching of clusters to classes, class shares,
the ImageNet-S ids).

Each check computes its own reference (the course's decoder :func:`course_lib.data.label_png.decode_imagenet_s`,
``scipy.optimize.linear_sum_assignment``, a direct count, the constants of :mod:`course_lib.data`), never a value
stored from the solution.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..data.imagenet_s import IMAGENET_S_SUBSETS
from ..data.label_png import IMAGENET_S_IGNORE, IMAGENET_S_OTHER, decode_imagenet_s
from . import call_learner, expect, expect_close, passed, require_done

_DECODE = "exercise 1 (decoding an ImageNet-S label PNG)"
_MATCH = "exercise 2 (Hungarian matching of clusters to classes)"
_COUNTS = "exercise 3 (pixels per class)"
_IDS = "exercise 4 (the ImageNet-S ids)"


def check_decode(decode: Callable[[np.ndarray], np.ndarray]) -> None:
    """Checks ``decode(png)``: an H×W×3 ``uint8`` label PNG → the H×W class ids ``R + 256·G``.

    Reference: :func:`course_lib.data.label_png.decode_imagenet_s` on random PNGs whose G channel is 0–3 (ids up
    to 1023, so ignore = 1000 = (232, 3) is among them): an answer computed in ``uint8`` wraps around and fails.
    """
    generator = np.random.default_rng(0)
    png = np.zeros((6, 7, 3), np.uint8)
    png[..., 0] = generator.integers(0, 256, size=(6, 7))
    png[..., 1] = generator.integers(0, 4, size=(6, 7))
    png[..., 2] = generator.integers(0, 256, size=(6, 7))     # B carries no id
    png[0, 0] = (232, 3, 0)                                    # 1000: ignore
    ids = require_done(call_learner(decode, png.copy(), what=_DECODE), _DECODE)
    expect_close(np.asarray(ids), decode_imagenet_s(png), _DECODE, rtol=0, atol=0.5,
                 hint="id = R + 256·G, computed in a wide integer type (uint8 wraps at 256), B is not used")
    passed(_DECODE, f"{png.shape[0]}×{png.shape[1]} ids up to {int(decode_imagenet_s(png).max())} decoded")


def _agreement(confusion: np.ndarray, assignment: np.ndarray) -> int:
    return int(confusion[np.arange(len(assignment)), assignment].sum())


def check_match_clusters(match_clusters: Callable[[np.ndarray], np.ndarray]) -> None:
    """Checks ``match_clusters(confusion)``: ``confusion[k, c]`` counts the pixels of cluster k whose true class is
    c (K×K); the answer ``assignment[k]`` (length K) must be a one-to-one map of clusters to classes that maximises
    the matched pixels ``Σ_k confusion[k, assignment[k]]``.

    Reference: ``scipy.optimize.linear_sum_assignment(confusion, maximize=True)``, compared by the total matched
    (ties may be broken differently), on random matrices and on one where each cluster's best class is the same
    class, so a per-cluster argmax is not one-to-one.
    """
    generator = np.random.default_rng(1)
    greedy_trap = np.array([[50, 40, 0], [45, 5, 30], [44, 0, 2]])
    for confusion in [greedy_trap] + [generator.integers(0, 100, size=(k, k)) for k in (4, 7)]:
        assignment = np.asarray(call_learner(match_clusters, confusion.copy(), what=_MATCH))
        k = len(confusion)
        expect(assignment.shape == (k,), _MATCH, f"assignment must have one class per cluster, shape ({k},), "
                                                  f"got {assignment.shape}")
        expect(sorted(assignment.tolist()) == list(range(k)), _MATCH,
               f"assignment {assignment.tolist()} is not one-to-one: each class must get exactly one cluster "
               "(a per-cluster argmax gives several clusters the same class)")
        clusters, classes = linear_sum_assignment(confusion, maximize=True)
        best = int(confusion[clusters, classes].sum())
        expect(_agreement(confusion, assignment) == best, _MATCH,
               f"your matching keeps {_agreement(confusion, assignment)} pixels, the best one-to-one matching keeps "
               f"{best}; use the Hungarian algorithm (scipy.optimize.linear_sum_assignment, maximize=True)")
    passed(_MATCH, "one-to-one and optimal on 3 confusion matrices")


def check_class_counts(counts: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
    """Checks ``counts``: the number of pixels of each class 0..num_classes−1 in ``labels`` (length num_classes,
    a class with no pixel counts 0). Reference: a direct count per class."""
    counts = np.asarray(require_done(counts, _COUNTS))
    reference = np.array([(labels == c).sum() for c in range(num_classes)])
    expect_close(counts, reference, _COUNTS, rtol=0, atol=0.5,
                 hint=f"one entry per class (np.bincount(labels.ravel(), minlength={num_classes}))")
    shares = 100 * reference / reference.sum()
    passed(_COUNTS, f"largest class {shares.max():.1f} % of the pixels, smallest {shares.min():.1f} %")


def check_imagenet_s_ids(other_id: int, ignore_id: int, n_classes: int) -> None:
    """Checks the reading of ImageNet-S (Gao et al., TPAMI 2022, §3): the id of 'other' (the background), of
    the ignored boundary pixels, and the number of classes of the largest subset (ImageNet-S919, without 'other').
    Reference: the constants of :mod:`course_lib.data.label_png` and :mod:`course_lib.data.imagenet_s`."""
    for value, expected, name in ((other_id, IMAGENET_S_OTHER, "other_id"), (ignore_id, IMAGENET_S_IGNORE, "ignore_id"),
                                  (n_classes, max(IMAGENET_S_SUBSETS), "n_classes")):
        require_done(value, _IDS)
        expect(value == expected, _IDS, f"{name} = {value} is not what the benchmark uses; re-read section 4 and the "
                                        "ImageNet-S layout paragraph")
    passed(_IDS, f"'other' {other_id}, ignore {ignore_id}, {n_classes} classes")
