"""Checks of lesson 06 (PASS: the 'other' threshold τ, the IoU of 'other', attention-weighted pooling).

Each check computes its own reference on its own inputs (the course's implementation in
:mod:`course_lib.luss.labels`, or a direct count), never a value stored from the solution.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..data.label_png import IMAGENET_S_IGNORE, IMAGENET_S_OTHER
from ..luss.labels import apply_threshold, pooled_embeddings
from . import call_learner, expect, expect_close, passed, require_done

_TAU = "exercise 1 (the 'other' threshold τ)"
_OTHER = "exercise 2 (the IoU of 'other')"
_POOLING = "exercise 3 (attention-weighted pooling)"


def check_tau_labels(pseudo_labels: Callable[[np.ndarray, np.ndarray, float], np.ndarray]) -> None:
    """Checks ``pseudo_labels(ids, mean_attention, tau)``: cluster ids 1..K (H×W) become 'other' (0) where the
    channel-mean attention ā < τ, strictly (the official ``evaluator.py:46``: ``predict_[logit < t] = 0``);
    a pixel with ā = τ keeps its cluster.

    Reference: :func:`course_lib.luss.labels.apply_threshold` on random maps whose attention takes values on
    a 0.05 grid, so that many pixels sit exactly at τ.
    """
    generator = np.random.default_rng(6)
    for tau in (0.4, 0.55, 0.0):
        ids = generator.integers(1, 11, size=(12, 16))
        mean_attention = generator.integers(0, 21, size=(12, 16)) * 0.05
        mean_attention[0, :4] = tau                                   # ties: exactly at τ
        labels = np.asarray(call_learner(pseudo_labels, ids.copy(), mean_attention.copy(), tau, what=_TAU))
        expect(labels.shape == ids.shape, _TAU, f"the labels must keep the map's shape {ids.shape}, got {labels.shape}")
        reference = apply_threshold(ids, mean_attention, tau)
        wrong = labels != reference
        at_tau = wrong & np.isclose(mean_attention, tau)
        expect(not at_tau.any(), _TAU, f"{int(at_tau.sum())} pixels with ā exactly τ = {tau} were changed: "
                                       "'other' is ā < τ (strict), as in the official evaluator")
        expect(not wrong.any(), _TAU, f"{int(wrong.sum())} of {wrong.size} pixels differ at τ = {tau}: keep the "
                                      "cluster id where ā ≥ τ and write 0 where ā < τ")
    passed(_TAU, "'other' exactly where ā < τ, ties kept, at τ = 0.4, 0.55 and 0")


def _iou_of_other(predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> float:
    """IoU of 'other' (id 0) in percent over all non-ignore pixels of the dataset: TP / (TP + FP + FN)."""
    tp = fp = fn = 0
    for prediction, truth in zip(predictions, truths):
        prediction, truth = np.asarray(prediction), np.asarray(truth)
        valid = truth != IMAGENET_S_IGNORE
        predicted, true = (prediction == IMAGENET_S_OTHER) & valid, (truth == IMAGENET_S_OTHER) & valid
        tp += int((predicted & true).sum())
        fp += int((predicted & ~true).sum())
        fn += int((~predicted & true).sum())
    return 100 * tp / max(tp + fp + fn, 1)


def check_other_contribution(other_iou: float, other_share_of_miou: float, predictions: Sequence[np.ndarray],
                             truths: Sequence[np.ndarray], n_categories: int) -> None:
    """Checks the IoU of 'other' (``other_iou``, percent) of the pseudo-labels ``predictions`` against the
    ImageNet-S ground truth ``truths`` (0 'other', 1..K, 1000 ignored), and what it adds to the mIoU over the
    K + 1 classes (``other_share_of_miou`` = IoU('other') / (K + 1)).

    Reference: TP, FP and FN of 'other' counted pixel by pixel over the whole set here ('other' needs no
    matching: 0 always maps to 0). Counting the share of 'other' pixels instead of the IoU fails.
    """
    iou = float(require_done(other_iou, _OTHER + ": other_iou"))
    share = float(require_done(other_share_of_miou, _OTHER + ": other_share_of_miou"))
    expected = _iou_of_other(predictions, truths)
    expect_close(iou, expected, _OTHER + ": IoU('other') in %", rtol=0, atol=0.02,
                 hint="over all validation pixels except ignore (1000): TP = predicted 0 and true 0, "
                      "FP = predicted 0 but true category, FN = true 0 but predicted category; 100·TP/(TP+FP+FN)")
    expect_close(share, expected / (n_categories + 1), _OTHER + ": its part of the mIoU", rtol=0, atol=0.01,
                 hint=f"the mIoU is the mean over the K + 1 = {n_categories + 1} classes, 'other' included")
    passed(_OTHER, f"IoU('other') = {expected:.2f} %, {expected / (n_categories + 1):.2f} points of the mIoU; at "
                   "τ = 0 no pixel is 'other', so these points are lost")


def check_attention_pooling(attention_pooled: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Checks ``attention_pooled(features, attention)``: B×C×h×w features F (not normalised) and attention a
    of the same shape → B×C embeddings v = mean_{h,w}(F ⊙ a) / ‖mean_{h,w}(F ⊙ a)‖ (PASS §4.3).

    Reference: :func:`course_lib.luss.labels.pooled_embeddings` on random features of uneven norms and an
    attention that differs between channels (pooling with the channel mean ā, or normalising F first, fails).
    """
    generator = torch.Generator().manual_seed(6)
    features = torch.randn(3, 5, 4, 6, generator=generator) * torch.rand(3, 1, 4, 6, generator=generator) * 3
    attention = torch.rand(3, 5, 4, 6, generator=generator)
    pooled = call_learner(attention_pooled, features.clone(), attention.clone(), what=_POOLING)
    pooled = torch.as_tensor(pooled)
    expect(tuple(pooled.shape) == (3, 5), _POOLING, f"one C-vector per image: B×C = (3, 5), got {tuple(pooled.shape)}")
    expect_close(pooled.norm(dim=1), torch.ones(3), _POOLING + ": the norms", rtol=1e-4, atol=1e-5,
                 hint="L2-normalise each image's pooled vector (dim=1)")
    expect_close(pooled, pooled_embeddings(features, attention), _POOLING, rtol=1e-4, atol=1e-5,
                 hint="multiply F and a channel by channel (not by ā), average over h and w, then normalise; "
                      "the features are used as they are, not normalised per pixel")
    passed(_POOLING, "v = normalise(mean(F ⊙ a)) as course_lib.luss.labels.pooled_embeddings")
