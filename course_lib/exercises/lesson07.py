"""Checks of lesson 07 (SegSort: the vMF E- and M-step, the segment-sorting loss, the loss as κ → 0).

Each check computes its own reference on its own inputs (the course's implementation in
:mod:`course_lib.segsort`, or a closed form), never a value stored from the solution.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..segsort.loss import segment_sort_loss
from ..segsort.vmf import assign_to_nearest, batch_segment_ids, mean_directions
from . import call_learner, expect, expect_close, passed, require_done

_EM = "exercise 1 (the vMF E-step and M-step)"
_LOSS = "exercise 2 (the segment-sorting loss)"
_FLAT = "exercise 3 (the loss as κ → 0)"


def _unit_points(n_points: int, dim: int, seed: int) -> torch.Tensor:
    """N×D random unit vectors."""
    return F.normalize(torch.randn(n_points, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def check_vmf_em(e_step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 m_step: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> None:
    """Checks hard EM for a vMF mixture with a shared κ (SegSort's pixel sorting), on N×D unit points:

    - ``e_step(points, prototypes)`` (N×D, S×D unit) → N ids: the prototype of largest cosine μ_sᵀe_i
      (the largest posterior, since κ is shared);
    - ``m_step(points, ids, n_segments)`` → S×D prototypes μ_s = Σ_{i∈s} e_i / ‖Σ_{i∈s} e_i‖ (the vMF
      maximum-likelihood mean direction), the zero vector for a segment without points (never NaN).

    Reference: :func:`course_lib.segsort.vmf.assign_to_nearest` and :func:`~course_lib.segsort.vmf.mean_directions`
    (batched; run here on a batch of one), with an empty segment in the M-step's input.
    """
    points = _unit_points(40, 6, seed=7)
    prototypes = _unit_points(5, 6, seed=8)
    ids = torch.as_tensor(call_learner(e_step, points.clone(), prototypes.clone(), what=_EM + ": e_step"))
    expect(tuple(ids.shape) == (40,), _EM + ": e_step", f"one id per point: shape (40,), got {tuple(ids.shape)}")
    reference_ids = assign_to_nearest(points[None], prototypes[None], torch.ones(1, 5, dtype=torch.long))[0]
    wrong = int((ids.long() != reference_ids).sum())
    expect(wrong == 0, _EM + ": e_step", f"{wrong} of 40 points are not assigned to the prototype of largest "
                                         "cosine: argmax over the prototypes of points @ prototypes.T")
    ids = reference_ids.clone()
    ids[ids == 2] = 0                                                   # segment 2 is now empty
    means = torch.as_tensor(call_learner(m_step, points.clone(), ids.clone(), 5, what=_EM + ": m_step"))
    expect(tuple(means.shape) == (5, 6), _EM + ": m_step", f"S×D = (5, 6) prototypes, got {tuple(means.shape)}")
    expect(bool(torch.isfinite(means).all()), _EM + ": m_step",
           "NaN or inf for the empty segment 2: divide by the norm clamped away from 0, so it stays the zero vector")
    reference, _ = mean_directions(points[None], ids[None], 5)
    expect_close(means, reference[0], _EM + ": m_step", rtol=1e-4, atol=1e-5,
                 hint="sum the unit points of each segment and divide by the norm of that sum (a unit vector, "
                      "not the plain mean); an empty segment keeps the zero vector")
    passed(_EM, "E-step = largest cosine, M-step = normalised sums (an empty segment stays 0)")


def _loss_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """N×D unit embeddings (N = 60, D = 8) and ids 0..S-1 (S = 7, every id used)."""
    points = _unit_points(60, 8, seed)
    ids = torch.arange(60) % 7
    return points, ids[torch.randperm(60, generator=torch.Generator().manual_seed(seed))]


def check_segment_sort_loss(segment_loss: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> None:
    """Checks ``segment_loss(e, segments, kappa)``: N×D unit pixel embeddings e_i and their region ids s_i
    (0..S-1) → the scalar mean over pixels of −log p(s_i | e_i), p(s | e_i) = softmax_s(κ μ_sᵀ e_i), with the
    prototypes μ_s = Σ_{i∈s} e_i / ‖Σ_{i∈s} e_i‖ computed from the same pixels (SegSort §3, unsupervised).

    Reference: :func:`course_lib.segsort.loss.segment_sort_loss` on the pixels laid out as a 1×D×1×N map, for
    κ = 10 (the paper's) and κ = 3.
    """
    for kappa, seed in ((10.0, 7), (3.0, 9)):
        points, ids = _loss_inputs(seed)
        loss = call_learner(segment_loss, points.clone(), ids.clone(), kappa, what=_LOSS)
        loss = torch.as_tensor(loss)
        expect(loss.numel() == 1, _LOSS, f"one number for the whole set of pixels, got shape {tuple(loss.shape)}")
        reference = segment_sort_loss(points.T[None, :, None, :], ids[None, None, :], concentration=kappa)
        expect_close(loss.detach().double().reshape(()), reference.double(), _LOSS + f" (κ = {kappa:g})",
                     rtol=1e-4, atol=1e-5,
                     hint="prototypes = normalised sums of each segment's pixels; logits = κ · e @ μ.T (N×S); "
                          "cross-entropy with the pixel's own segment as the target, averaged over pixels")
    passed(_LOSS, "the same loss as course_lib.segsort.segment_sort_loss at κ = 10 and κ = 3")


def check_flat_loss(prediction: float, flat: float, segments: torch.Tensor) -> None:
    """Predict-then-measure: ``prediction`` is the learner's guess of the segment-sorting loss as κ → 0 for the
    batch whose over-segmentation is ``segments`` (B×H×W per-image region ids), ``flat`` the loss measured at
    κ = 1e-6.

    Reference: the closed form log S. At κ = 0 every one of the S regions of the batch is equally likely,
    p = 1/S, whatever the embedding; S is counted here from ``segments`` (distinct regions per image, summed).
    The prediction is compared and reported, not required to be right.
    """
    guess = float(require_done(prediction, _FLAT + ": your prediction"))
    measured = float(require_done(flat, _FLAT + ": the measured loss"))
    _, image_index, _ = batch_segment_ids(torch.as_tensor(segments))
    n_segments = len(image_index)
    expected = math.log(n_segments)
    expect_close(measured, expected, _FLAT + ": the loss at κ = 1e-6", rtol=1e-4, atol=1e-4,
                 hint="segment_sort_loss(e, prior, concentration=1e-6) on the batch of section 5")
    verdict = "right" if abs(guess - expected) <= 0.01 * expected else f"off by {guess - expected:+.2f}"
    passed(_FLAT, f"log S = log {n_segments} = {expected:.4f}; your prediction {guess:.4f} was {verdict}. "
                  "The softmax is flat, the loss no longer depends on the embedding: no gradient signal")
