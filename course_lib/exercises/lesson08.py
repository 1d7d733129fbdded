"""Checks of lesson 08 (evaluation: Hungarian matching, ImageNet-S presence matching, the F-measure).

Each check computes its own reference on its own inputs (SciPy's assignment solver, the course's ImageNet-S
evaluator, or a direct count), never a value stored from the solution.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..evaluation.imagenet_s import ImageNetSEvaluator, image_presence
from . import call_learner, expect, expect_close, passed

_HUNGARIAN = "exercise 1 (Hungarian matching of clusters to classes)"
_PRESENCE = "exercise 2 (ImageNet-S's image-level co-occurrence)"
_F_MEASURE = "exercise 3 (the F-measure)"


def _greedy_trap(n: int, generator: np.random.Generator) -> np.ndarray:
    """An n×n confusion matrix (clusters × classes) where every cluster's largest count is class 0, so a
    row-wise argmax maps several clusters to one class and misses the one-to-one optimum."""
    stats = generator.integers(0, 50, size=(n, n))
    stats[:, 0] += 200
    return stats


def check_hungarian(match_clusters: Callable[[np.ndarray], np.ndarray]) -> None:
    """Checks ``match_clusters(stats)``: ``stats[cluster, class]`` pixel counts (C×C) → ``assignment`` of length
    C with ``assignment[cluster] = class``, one-to-one, maximising the matched pixels Σ stats[c, assignment[c]]
    (STEGO's evaluation; the Hungarian algorithm).

    Reference: the optimum of :func:`scipy.optimize.linear_sum_assignment` (compared by its value, so another
    optimal assignment also passes), on random matrices and on one where a row-wise argmax collides.
    """
    generator = np.random.default_rng(8)
    for stats in (generator.integers(0, 100, size=(6, 6)), _greedy_trap(5, generator),
                  generator.integers(0, 1000, size=(12, 12))):
        assignment = np.asarray(call_learner(match_clusters, stats.copy(), what=_HUNGARIAN)).astype(int).ravel()
        n = len(stats)
        expect(assignment.shape == (n,), _HUNGARIAN, f"one class per cluster: length {n}, got {assignment.shape}")
        expect(sorted(assignment.tolist()) == list(range(n)), _HUNGARIAN,
               f"the assignment {assignment.tolist()} is not one-to-one: every class must be taken by exactly one "
               "cluster (a row-wise argmax is not a matching)")
        rows, columns = linear_sum_assignment(stats, maximize=True)
        best = int(stats[rows, columns].sum())
        mine = int(stats[np.arange(n), assignment].sum())
        expect(mine == best, _HUNGARIAN, f"your assignment matches {mine} pixels, the optimum {best}: "
                                         "assignment[cluster] = class, maximising (not minimising) the matched pixels")
    passed(_HUNGARIAN, "one-to-one and optimal on three confusion matrices, including one where argmax collides")


def _presence_reference(predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray], n_categories: int) -> np.ndarray:
    """K×K: images where predicted id i+1 and ground-truth category j+1 both occur (ignore pixels left out)."""
    present = [image_presence(p, g, n_categories) for p, g in zip(predictions, truths)]
    predicted = np.stack([p for p, _ in present])[:, 1:].astype(np.int64)
    true = np.stack([g for _, g in present])[:, 1:].astype(np.int64)
    return predicted.T @ true


def check_co_occurrence(co_occurrence: Callable[[Sequence[np.ndarray], Sequence[np.ndarray], int], np.ndarray]) -> None:
    """Checks ``co_occurrence(predictions, truths, n_categories)``: lists of H×W maps in ImageNet-S ids (0 'other',
    1..K, 1000 ignore in the ground truth) → the K×K matrix whose entry (i−1, j−1) counts the *images* in which
    predicted id i and category j both occur among the non-ignore pixels ('other' left out): the matrix that
    ImageNet-S's fully unsupervised protocol matches with the Hungarian algorithm.

    Reference: :func:`course_lib.evaluation.imagenet_s.image_presence` per image, on random maps where a
    category's pixels also fall under ignore (counting pixels, or ignore pixels, fails).
    """
    generator = np.random.default_rng(8)
    n_categories = 4
    truths, predictions = [], []
    for _ in range(9):
        truth = np.zeros((10, 10), np.int64)
        truth[2:7, 3:8] = generator.integers(1, n_categories + 1)
        truth[0, :] = 1000
        prediction = np.where(generator.random((10, 10)) < 0.6, generator.integers(0, n_categories + 1), 0)
        prediction[0, :] = generator.integers(1, n_categories + 1)          # only under ignore: must not count
        truths.append(truth)
        predictions.append(prediction)
    matrix = np.asarray(call_learner(co_occurrence, [p.copy() for p in predictions], [t.copy() for t in truths],
                                     n_categories, what=_PRESENCE))
    expect(matrix.shape == (n_categories, n_categories), _PRESENCE,
           f"K×K = {(n_categories, n_categories)} (ids 1..K, 'other' left out), got {matrix.shape}")
    reference = _presence_reference(predictions, truths, n_categories)
    expect_close(matrix.astype(float), reference.astype(float), _PRESENCE, rtol=0, atol=0.5,
                 hint="per image, the set of predicted ids and the set of true categories among the pixels whose "
                      "ground truth is not 1000; add 1 to entry (i−1, j−1) for every pair: images, not pixels")
    passed(_PRESENCE, "image counts of (predicted id, category) pairs, ignore pixels left out")


def check_f_measure(f_measure: Callable[[np.ndarray, np.ndarray], float]) -> None:
    """Checks ``f_measure(prediction, truth)`` for one image in ImageNet-S ids (0 'other', 1000 ignore in the
    ground truth): foreground = not 'other', over the non-ignore pixels; P = TP / predicted foreground,
    R = TP / true foreground, F = (1 + β²)·P·R / (β²·P + R) with β² = 0.3 (precision weighs more), and 0 when
    no pixel is foreground in both. A number in [0, 1].

    Reference: :class:`course_lib.evaluation.imagenet_s.ImageNetSEvaluator` scoring the image alone (its
    ``f_measure`` in percent / 100), on images where precision and recall differ (so β = 0.3 instead of
    β² = 0.3, or P and R swapped, fail), with ignore pixels, and an image with no hit.
    """
    generator = np.random.default_rng(9)
    cases = []
    for _ in range(3):
        truth = np.zeros((16, 16), np.int64)
        truth[4:12, 3:10] = 2
        truth[:, :2] = 1000
        prediction = np.where(generator.random((16, 16)) < 0.5, 2, 0)
        prediction[4:12, 3:10] = np.where(generator.random((8, 7)) < 0.9, 2, 0)
        cases.append((prediction, truth))
    cases.append((np.where(cases[0][1] == 0, 1, 0), cases[0][1]))          # foreground only where truth is 'other'
    for prediction, truth in cases:
        value = float(call_learner(f_measure, prediction.copy(), truth.copy(), what=_F_MEASURE))
        evaluator = ImageNetSEvaluator(2)
        evaluator.update(prediction, truth)
        expect_close(value, evaluator.compute()["f_measure"] / 100, _F_MEASURE, rtol=1e-6, atol=1e-6,
                     hint="leave out pixels whose truth is 1000; P = TP / predicted foreground, R = TP / true "
                          "foreground; F = 1.3·P·R / (0.3·P + R), and 0 when TP = 0")
    passed(_F_MEASURE, "the ImageNet-S F-measure (β² = 0.3) on four images, one without any hit")
