"""STEGO's full objective on a batch: sampled grids, the self / kNN / random terms (§3.2, eq. 5).

As the official ``ContrastiveCorrelationLoss.forward`` (``mhamilton723/STEGO``, ``src/modules.py``):

1. two grids of S×S continuous positions are drawn per image, the *anchor* grid (coords1) and the
   *partner* grid (coords2), independently;
2. the image's signal and codes are read on the anchor grid, its kNN partner's on the partner grid;
3. self term: the anchor grid against itself; kNN term: anchor grid against the partner's grid;
4. random term: for each of ``neg_samples`` derangements σ of the batch, image i's anchor grid against
   image σ(i)'s maps read on the partner grid; the term is the mean over the negatives;
5. ``total = λ_self · self + λ_knn · knn + λ_rand · rand``.
"""
from __future__ import annotations

import torch

from .configs import StegoConfig
from .correlation import random_coordinates, sample_grid, unit, unit_grids_loss
from .pairs import derangement


def stego_loss(signal: torch.Tensor, signal_pos: torch.Tensor, codes: torch.Tensor, codes_pos: torch.Tensor,
               config: StegoConfig, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The three STEGO terms and their weighted sum for a batch.

    Args:
        signal, signal_pos: B×C×h×w features of the images and of their kNN partners (the distillation
            signal; gradients are not propagated to them).
        codes, codes_pos: B×D×h×w codes of the same images.
        config: weights λ, shifts b, ``feature_samples``, ``neg_samples``, ``pointwise``, ``zero_clamp``.
        generator: CPU generator for the grids and the derangements (reproducible runs).

    Returns:
        ``{"self", "knn", "rand", "total"}`` scalar tensors (``total`` carries the gradient).
    """
    batch = signal.shape[0]
    if signal_pos.shape[0] != batch or codes.shape[0] != batch or codes_pos.shape[0] != batch:
        raise ValueError("signal, signal_pos, codes and codes_pos must hold the same number of images")
    device = signal.device
    anchor = random_coordinates(batch, config.feature_samples, generator, device)
    partner = random_coordinates(batch, config.feature_samples, generator, device)

    def grids(maps: torch.Tensor, coordinates: torch.Tensor, target: bool) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not target):
            return unit(sample_grid(maps, coordinates).float())

    feats, code = grids(signal, anchor, True), grids(codes, anchor, False)
    feats_pos, code_pos = grids(signal_pos, partner, True), grids(codes_pos, partner, False)
    options = dict(pointwise=config.pointwise, zero_clamp=config.zero_clamp)

    self_term = unit_grids_loss(feats, feats, code, code, config.b_self, **options)
    knn_term = unit_grids_loss(feats, feats_pos, code, code_pos, config.b_knn, **options)
    rand_terms = []
    for _ in range(config.neg_samples):
        perm = derangement(batch, generator).to(device)
        rand_terms.append(unit_grids_loss(feats, grids(signal[perm], partner, True), code,
                                          grids(codes[perm], partner, False), config.b_rand, **options))
    rand_term = torch.stack(rand_terms).mean()
    total = config.lambda_self * self_term + config.lambda_knn * knn_term + config.lambda_rand * rand_term
    return {"self": self_term, "knn": knn_term, "rand": rand_term, "total": total}
