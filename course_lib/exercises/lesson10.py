"""Checks of lesson 10 (your own images: the label-free cluster-size entropy, the Hungarian mIoU of the reveal,
the tokens of a DINOv2 ViT with registers).

Each check computes its own reference on its own inputs (the course's implementation: :mod:`course_lib.stego.folder`,
:class:`course_lib.evaluation.UnsupervisedMetrics`, :class:`course_lib.models.vit.VisionTransformer`), never a value
stored from the solution; given the lesson's own results, it also applies the learner's function to them.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..evaluation import UnsupervisedMetrics
from ..models.vit import VisionTransformer
from ..stego.folder import cluster_size_entropy
from . import call_learner, expect, expect_close, passed

_ENTROPY = "exercise 1 (the label-free cluster-size entropy)"
_MIOU = "exercise 2 (the Hungarian mIoU of the reveal)"
_TOKENS = "exercise 3 (the tokens of DINOv2 with registers)"


def _entropy_maps() -> tuple[list[np.ndarray], int]:
    """Three label maps of different sizes over K = 6 clusters, cluster 5 never used, each image dominated by
    another cluster (so that the mean of per-image entropies differs from the entropy of the pooled pixels)."""
    generator = np.random.default_rng(10)
    maps = []
    for main, (height, width) in zip((0, 2, 4), ((20, 30), (36, 24), (16, 16))):
        ids = generator.integers(0, 5, size=(height, width))
        ids[generator.random((height, width)) < 0.6] = main
        maps.append(ids.astype(np.uint8))
    return maps, 6


def check_size_entropy(size_entropy: Callable[[Sequence[np.ndarray], int], float],
                       label_maps: Sequence[np.ndarray] | None = None, k: int | None = None) -> None:
    """Checks ``size_entropy(label_maps, k)``: a list of H×W cluster-id maps (any sizes, ids 0..K−1) → the
    entropy of the folder's cluster shares over log K, H = −Σ_k p_k log p_k / log K, p_k the share of *all*
    the maps' pixels in cluster k (pooled, not averaged per image), 0 · log 0 = 0 for an empty cluster and the
    normaliser log K of the K clusters asked for (not of the non-empty ones).

    Reference: :func:`course_lib.stego.folder.cluster_size_entropy` of the pooled shares, on maps with an empty
    cluster and images of different sizes and compositions; then, given the lesson's ``label_maps`` and ``k``,
    on those.
    """
    cases = [_entropy_maps()] + ([(list(label_maps), k)] if label_maps is not None else [])
    for maps, clusters in cases:
        value = call_learner(size_entropy, [m.copy() for m in maps], clusters, what=_ENTROPY)
        pooled = np.bincount(np.concatenate([m.ravel() for m in maps]).astype(np.int64), minlength=clusters)
        expected = cluster_size_entropy(pooled / pooled.sum())
        expect(np.all(np.isfinite(np.asarray(value, dtype=float))), _ENTROPY,
               "NaN or inf: an empty cluster has p = 0 and contributes 0 (0 · log 0 = 0), so drop the zero shares "
               "before taking the log")
        expect_close(float(value), expected, _ENTROPY, rtol=1e-6, atol=1e-9,
                     hint="count the pixels of each cluster over all maps together (bincount with minlength=k), "
                          "divide by the total, then −Σ p log p over the non-zero p, divided by log k")
    detail = "pooled shares, an empty cluster counts as 0, normalised by log K"
    if label_maps is not None:
        detail += f"; the lesson's {len(label_maps)} label PNGs (K = {k}): {float(value):.3f}"
    passed(_ENTROPY, detail)


def _reference_miou(stats: np.ndarray) -> float:
    """STEGO's Hungarian mIoU (%) of a C×C confusion matrix (clusters × classes), through UnsupervisedMetrics."""
    metrics = UnsupervisedMetrics(stats.shape[1])
    metrics.stats = torch.as_tensor(stats, dtype=torch.int64).clone()
    return float(metrics.compute()["mIoU"])


def check_hungarian_miou(hungarian_miou: Callable[[np.ndarray], float],
                         reveal: UnsupervisedMetrics | None = None) -> None:
    """Checks ``hungarian_miou(stats)``: ``stats[cluster, class]`` pixel counts (C×C) → the mIoU in percent after
    the one-to-one matching of clusters to classes that maximises the matched pixels (Hungarian): per class c,
    matched to cluster k, IoU_c = TP / (TP + FP + FN) with TP = stats[k, c], FP = the rest of row k, FN = the
    rest of column c; the mean over the classes whose IoU is defined (STEGO's evaluation, DESIGN §5).

    Reference: :class:`course_lib.evaluation.UnsupervisedMetrics` with the same confusion matrix, on random
    matrices and one where a row-wise argmax maps several clusters to one class; given the lesson's ``reveal``
    (the metrics after ``compute()``), on its confusion matrix, which must reproduce the reveal's mIoU.
    """
    generator = np.random.default_rng(12)
    trap = generator.integers(0, 40, size=(5, 5))
    trap[:, 0] += 150                                    # every cluster's largest count is class 0
    cases = [generator.integers(0, 200, size=(6, 6)), trap, generator.integers(0, 1000, size=(12, 12))]
    if reveal is not None:
        cases.append(reveal.stats.numpy())
    for stats in cases:
        value = float(call_learner(hungarian_miou, stats.copy(), what=_MIOU))
        expected = _reference_miou(stats)
        expect(0 <= value <= 100, _MIOU, f"{value:.4g} is not a percentage: multiply the mean IoU by 100")
        expect_close(value, expected, _MIOU, rtol=1e-6, atol=1e-6,
                     hint="match with scipy.optimize.linear_sum_assignment(stats, maximize=True) (one-to-one, not "
                          "a row-wise argmax); then IoU = TP / (TP + FP + FN) per class, not TP / (TP + FN) or "
                          "the accuracy")
    detail = "the same mIoU as UnsupervisedMetrics on three confusion matrices, one where argmax collides"
    if reveal is not None:
        detail += f"; the reveal's confusion matrix: {value:.1f} % (the reveal: {reveal.compute()['mIoU']:.1f} %)"
    passed(_MIOU, detail)


def _measured_tokens(height: int, width: int, patch: int, registers: int) -> tuple[int, int]:
    """(patch tokens, tokens the attention covers) of a one-block random ViT of DINOv2's layout at H×W."""
    torch.manual_seed(0)
    vit = VisionTransformer(patch, 12, 1, 2, img_size=4 * patch, layer_scale=registers > 0,
                            num_register_tokens=registers).eval()
    with torch.no_grad():
        image = torch.zeros(1, 3, height, width)
        features, attention = vit.patch_features(image), vit.last_attention(image)
    return features.shape[2] * features.shape[3], attention.shape[-1]


TOKEN_CASES = ((322, 322, 14, 4), (224, 322, 14, 0), (322, 448, 14, 4), (320, 480, 8, 0))
"""(H, W, patch, registers): DINOv2 ViT-S/14 with 4 registers at STEGO's 322-px evaluation size, DINOv2 without
registers on a 224×322 crop, a non-square 322×448 photo with registers, DINO ViT-S/8 at 320×480."""


def check_dinov2_tokens(tokens: Callable[[int, int, int, int], tuple[int, int]]) -> None:
    """Checks ``tokens(height, width, patch, registers)`` → ``(n_patches, n_attention)``: the patch tokens of an
    H×W image (H, W multiples of the patch size) and the side of ``last_attention``'s square, which covers
    [CLS, registers, patches] (DESIGN §5): n_patches = (H / p)·(W / p), n_attention = 1 + R + n_patches.

    Reference: the shapes of :meth:`VisionTransformer.patch_features` and :meth:`VisionTransformer.last_attention`
    of a random one-block ViT built with that patch size and number of registers, for :data:`TOKEN_CASES`.
    """
    for height, width, patch, registers in TOKEN_CASES:
        answer = call_learner(tokens, height, width, patch, registers, what=_TOKENS)
        expect(isinstance(answer, (tuple, list)) and len(answer) == 2, _TOKENS,
               f"return two numbers (n_patches, n_attention), got {answer!r}")
        expected = _measured_tokens(height, width, patch, registers)
        case = f"{height}×{width} px, patch {patch}, {registers} registers"
        expect(int(answer[0]) == expected[0], _TOKENS, f"{case}: {int(answer[0])} patch tokens, the model has "
                                                       f"{expected[0]}: (H / patch) · (W / patch), no extra token")
        expect(int(answer[1]) == expected[1], _TOKENS,
               f"{case}: the attention covers {expected[1]} tokens, you said {int(answer[1])}: count [CLS], "
               "the registers and the patches")
    n_patches, n_attention = _measured_tokens(*TOKEN_CASES[0])
    passed(_TOKENS, f"DINOv2 ViT-S/14 with 4 registers at 322×322: {n_patches} patch tokens, attention over "
                    f"{n_attention} = 1 + 4 + {n_patches}; right for all {len(TOKEN_CASES)} cases")
