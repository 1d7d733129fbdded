"""Checks of lesson 05 (PASS representation learning: SwAV's Sinkhorn-Knopp, pixel-to-pixel alignment).

Each check computes its own reference on its own inputs (the course's implementation in
:mod:`course_lib.ssl` / :mod:`course_lib.luss.p2p`, or a closed form), never a value stored from the
solution.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..luss.p2p import pixel_to_pixel_loss
from ..ssl import sinkhorn
from . import call_learner, expect, expect_close, passed, require_done

_SINKHORN = "exercise 1 (Sinkhorn-Knopp on the K×B score matrix)"
_P2P = "exercise 2 (the pixel-to-pixel loss)"
_COLLAPSE = "exercise 3 (the codes of a collapsed network)"


def _unit_scores(n_prototypes: int, n_images: int, seed: int) -> torch.Tensor:
    """K×B cosines CᵀZ of random unit prototypes C (D×K) and embeddings Z (D×B), D = 16."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = F.normalize(torch.randn(16, n_prototypes, generator=generator), dim=0)
    embeddings = F.normalize(torch.randn(16, n_images, generator=generator), dim=0)
    return prototypes.T @ embeddings


def check_sinkhorn(sinkhorn_knopp: Callable[[torch.Tensor, float, int], torch.Tensor]) -> None:
    """Checks ``sinkhorn_knopp(M, epsilon, iterations)``: M is SwAV's K×B score matrix CᵀZ (prototypes ×
    images); the result is the K×B matrix Q* = Diag(u) exp(M/ε) Diag(v) after ``iterations`` rounds of
    "rows to 1/K, then columns to 1/B", multiplied by B so that every column (an image's code) sums to 1.

    Reference: :func:`course_lib.ssl.sinkhorn` (B×K in, B×K out: transposed around it), on score matrices
    with K ≠ B (a transposed answer cannot pass), for ε ∈ {0.05, 0.1} and 1 or 3 iterations.
    """
    for n_prototypes, n_images, epsilon, iterations in ((7, 12, 0.05, 3), (10, 6, 0.1, 1), (5, 9, 0.05, 1)):
        scores = _unit_scores(n_prototypes, n_images, seed=n_prototypes)
        codes = call_learner(sinkhorn_knopp, scores.clone(), epsilon, iterations, what=_SINKHORN)
        codes = torch.as_tensor(codes, dtype=torch.float64)
        expect(tuple(codes.shape) == (n_prototypes, n_images), _SINKHORN,
               f"for K = {n_prototypes} prototypes and B = {n_images} images Q is K×B = "
               f"{(n_prototypes, n_images)}, yours is {tuple(codes.shape)}: keep the paper's orientation")
        expect_close(codes.sum(0), torch.ones(n_images, dtype=torch.float64), _SINKHORN + ": the column sums",
                     rtol=1e-4, atol=1e-5, hint="after the last round every column (image) sums to 1/B; "
                                                "multiply by B at the end")
        reference = sinkhorn(scores.T, epsilon, iterations).T.double()
        expect_close(codes, reference, _SINKHORN + f" (ε = {epsilon}, {iterations} iteration(s))", rtol=1e-4,
                     atol=1e-5, hint="start from exp(M/ε) / Σ exp(M/ε); each round divides every row (prototype) "
                                     "by its sum times K, then every column (image) by its sum times B")
    passed(_SINKHORN, "the same codes as course_lib.ssl.sinkhorn for K ≠ B, ε 0.05/0.1, 1 and 3 iterations")


def _p2p_inputs(seed: int) -> tuple[torch.Tensor, ...]:
    """Random predictions p_a, p_b and targets z_a, z_b (B×D×G×G, B = 5, D = 8, G = 3) with gradients,
    and an overlap mask where pairs 1 and 3 do not overlap."""
    generator = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(5, 8, 3, 3, generator=generator).requires_grad_() for _ in range(4)]
    return (*tensors, torch.tensor([True, False, True, False, True]))


def check_p2p_loss(p2p_loss: Callable[..., torch.Tensor]) -> None:
    """Checks ``p2p_loss(p_a, p_b, z_a, z_b, overlap)`` = −½[cos(p_a, sg(z_b)) + cos(p_b, sg(z_a))], the cosine
    over the D channels at every grid point, averaged over the G×G points and over the pairs whose crops
    overlap (B bool ``overlap``), with the stop-gradient sg on the targets z.

    Reference: :func:`course_lib.luss.p2p.pixel_to_pixel_loss` on random B×D×G×G tensors where two of five
    pairs do not overlap; the stop-gradient is checked by back-propagating the learner's loss (no gradient may
    reach z_a or z_b, some must reach p_a and p_b).
    """
    p_a, p_b, z_a, z_b, overlap = _p2p_inputs(seed=5)
    loss = call_learner(p2p_loss, p_a, p_b, z_a, z_b, overlap.clone(), what=_P2P)
    expect(isinstance(loss, torch.Tensor) and loss.numel() == 1, _P2P,
           f"return the loss as a one-element tensor, got {type(loss).__name__}"
           f"{'' if not isinstance(loss, torch.Tensor) else ' of shape ' + str(tuple(loss.shape))}")
    with torch.no_grad():
        reference = pixel_to_pixel_loss(p_a, p_b, z_a, z_b, overlap)
    expect_close(loss.detach().reshape(()), reference, _P2P, rtol=1e-4, atol=1e-5,
                 hint="cosine over dim=1 (channels) at each point, both directions averaged (the ½), negated, "
                      "mean over the G×G points, then mean over the overlapping pairs only")
    expect(loss.requires_grad, _P2P, "the loss must be differentiable in the predictions p (no torch.no_grad)")
    loss.reshape(()).backward()
    leaked = [name for name, z in (("z_a", z_a), ("z_b", z_b)) if z.grad is not None and z.grad.abs().sum() > 0]
    expect(not leaked, _P2P, f"gradient reaches the targets {', '.join(leaked)}: the targets are sg(z) "
                             "(z.detach()), as in SimSiam: only the predictor's side learns from this term")
    expect(p_a.grad is not None and p_a.grad.abs().sum() > 0, _P2P, "no gradient reaches p_a")
    passed(_P2P, f"{float(loss.detach()):.4f} = pixel_to_pixel_loss, averaged over the 3 of 5 overlapping pairs, "
                 "no gradient into the targets")


def check_collapse(prediction: float, collapsed_codes: torch.Tensor, n_prototypes: int) -> None:
    """Predict-then-measure: a collapsed network gives every image the same scores. ``prediction`` is the
    learner's guess of the value of every code entry q_k of such a batch, ``collapsed_codes`` the B×K Sinkhorn
    codes they measured (``n_prototypes`` = K).

    Reference: the closed form. With identical rows, scaling every prototype's mass to 1/K makes every entry of
    Q equal, so every code is uniform, q_k = 1/K; codes taken as the softmax of the scores (no equipartition)
    fail. The prediction is compared and reported, not required to be right.
    """
    guess = float(require_done(prediction, _COLLAPSE + ": your prediction"))
    codes = torch.as_tensor(require_done(collapsed_codes, _COLLAPSE + ": the measured codes"), dtype=torch.float64)
    expect(codes.ndim == 2 and codes.shape[1] == n_prototypes, _COLLAPSE,
           f"the codes are B×K with K = {n_prototypes} (one row per image), got shape {tuple(codes.shape)}")
    expected = 1 / n_prototypes
    expect_close(codes, torch.full_like(codes, expected), _COLLAPSE + ": the measured codes", rtol=1e-4, atol=1e-6,
                 hint="repeat one row of scores for every image and take sinkhorn(...) of that batch, not a softmax")
    verdict = "right" if abs(guess - expected) <= 0.01 * expected else f"off by {guess - expected:+.3g}"
    passed(_COLLAPSE, f"every code is uniform, q_k = 1/K = {expected:.4f}; your prediction {guess:.4g} was {verdict}. "
                      f"Against uniform codes the loss −Σ q log p is at least ln K = {math.log(n_prototypes):.3f}: "
                      "equipartition leaves a collapsed network no better than chance")
