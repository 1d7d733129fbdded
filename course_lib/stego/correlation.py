"""Feature and code correspondences and STEGO's per-pair correlation loss (Hamilton et al., ICLR 2022, §3).

For two feature maps f (B×C×H×W) and g (B×C×I×J) the correspondence tensor is the cosine similarity of
every pair of positions (eq. 1)::

    F_hwij = f_hw · g_ij / (|f_hw| |g_ij|)                                      → B×H×W×I×J

STEGO distils the feature correspondence F (frozen backbone) into the code correspondence S of the
segmentation head's codes with the per-pair loss (eq. 2 made robust as eq. 4)::

    L(x, y, b) = - mean_hwij (F^SC_hwij - b) · max(S_hwij, 0)

with the official code's semantics (``mhamilton723/STEGO``, ``src/modules.py``,
``ContrastiveCorrelationLoss.helper``), which differ from a naive reading of the paper:

- *spatial centering* (eq. 3, ``pointwise``) subtracts from F, for each anchor position hw, its mean
  over the partner grid ij, and then adds back the global mean of the whole tensor (all pairs of the
  batch): ``F^SC = F - mean_ij F + mean_bhwij F``. Centering alone would move every term's mean to 0;
  restoring the global mean keeps the shift b meaningful;
- the 0-clamp (``zero_clamp``) acts on the *code* correspondence S, never on F;
- F is computed without gradient (the backbone is frozen); only S carries one;
- the loss is the mean over all B·H·W·I·J entries.

The grids are sampled first: :func:`random_coordinates` draws an S×S grid of continuous positions in
[-1, 1]² per image and :func:`sample_grid` reads the maps there with ``grid_sample`` (bilinear,
``align_corners=True``, border padding), as the official ``sample``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NORM_EPS = 1e-10
"""The eps of STEGO's ``norm`` (``F.normalize(t, dim=1, eps=1e-10)``)."""


def _check_maps(name: str, *maps: torch.Tensor) -> None:
    for index, t in enumerate(maps):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name}[{index}] must be a B×C×H×W tensor, got {shape}")
        if not t.is_floating_point():
            raise TypeError(f"{name}[{index}] must be a float tensor, got {t.dtype}")
    first = maps[0]
    for t in maps[1:]:
        if t.shape[:2] != first.shape[:2]:
            raise ValueError(f"{name}: batch and channel sizes differ: {tuple(first.shape)} vs {tuple(t.shape)}")


def unit(x: torch.Tensor) -> torch.Tensor:
    """``x / max(|x|, 1e-10)`` along dim 1: STEGO's ``norm``, the value of ``F.normalize(x, dim=1, eps=1e-10)``
    written out (several times faster on a CPU for channel-first maps)."""
    return x / x.square().sum(dim=1, keepdim=True).sqrt().clamp_min(NORM_EPS)


def _unit_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.einsum("nchw,ncij->nhwij", a, b)


def tensor_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine correspondences of a (B×C×H×W) and b (B×C×I×J) → B×H×W×I×J (eq. 1).

    Both maps are L2-normalised along C (eps 1e-10, so an all-zero vector gives 0, never NaN).
    """
    _check_maps("tensor_correlation inputs", a, b)
    return _unit_correlation(unit(a), unit(b))


def spatial_centering(correlation: torch.Tensor) -> torch.Tensor:
    """STEGO's spatial centering of a B×H×W×I×J correspondence (eq. 3, official semantics).

    ``F - mean_ij F + mean(F)``: for each anchor hw the mean over the partner grid ij is removed, then the
    global mean of the whole tensor (over the batch too) is restored.
    """
    if correlation.dim() != 5:
        raise ValueError(f"expected a B×H×W×I×J correspondence, got shape {tuple(correlation.shape)}")
    return correlation - correlation.mean(dim=(3, 4), keepdim=True) + correlation.mean()


@torch.no_grad()
def feature_correspondence(feats1: torch.Tensor, feats2: torch.Tensor, pointwise: bool = True) -> torch.Tensor:
    """The distillation target F (B×H×W×I×J, no gradient): cosine correspondence, spatially centred
    when ``pointwise``. Computed in float32 whatever the input precision."""
    correlation = tensor_correlation(feats1.float(), feats2.float())
    return spatial_centering(correlation) if pointwise else correlation


def correlation_loss(feats1: torch.Tensor, feats2: torch.Tensor, codes1: torch.Tensor, codes2: torch.Tensor,
                     shift: float, pointwise: bool = True, zero_clamp: bool = True) -> torch.Tensor:
    """STEGO's loss for one pair of (already sampled) grids, the scalar ``mean(-(F - b) · clamp(S))``.

    Args:
        feats1, feats2: backbone features B×C×H×W and B×C×I×J (gradients are not propagated to them).
        codes1, codes2: the head's codes B×D×H×W and B×D×I×J at the same positions.
        shift: b, subtracted from F (larger b pushes more pairs apart).
        pointwise: spatially centre F (:func:`spatial_centering`).
        zero_clamp: clamp S at 0 from below (official; without it S is used as is).
    """
    _check_maps("correlation_loss features", feats1, feats2)
    _check_maps("correlation_loss codes", codes1, codes2)
    if feats1.shape[0] != codes1.shape[0] or feats1.shape[2:] != codes1.shape[2:] \
            or feats2.shape[2:] != codes2.shape[2:]:
        raise ValueError(f"features {tuple(feats1.shape)}/{tuple(feats2.shape)} and codes "
                         f"{tuple(codes1.shape)}/{tuple(codes2.shape)} must share batch and grid sizes")
    with torch.no_grad():
        feats1, feats2 = unit(feats1.float()), unit(feats2.float())
    return unit_grids_loss(feats1, feats2, unit(codes1.float()), unit(codes2.float()), shift, pointwise, zero_clamp)


def unit_grids_loss(feats1: torch.Tensor, feats2: torch.Tensor, codes1: torch.Tensor, codes2: torch.Tensor,
                    shift: float, pointwise: bool = True, zero_clamp: bool = True) -> torch.Tensor:
    """:func:`correlation_loss` on grids already L2-normalised along C (:func:`unit`), for callers that use
    one grid in several terms (:func:`~.loss.stego_loss`)."""
    with torch.no_grad():
        target = _unit_correlation(feats1, feats2)
        if pointwise:
            target = spatial_centering(target)
    code_correlation = _unit_correlation(codes1, codes2)
    if zero_clamp:
        code_correlation = code_correlation.clamp(min=0.0)
    return -(code_correlation * (target - shift)).mean()


def random_coordinates(batch_size: int, samples: int = 11, generator: torch.Generator | None = None,
                       device: str | torch.device = "cpu") -> torch.Tensor:
    """B×S×S×2 continuous sampling positions, uniform in [-1, 1]² (``grid_sample`` order: x, then y).

    Drawn on the CPU from ``generator`` (reproducible on any device), then moved to ``device``.
    """
    if batch_size < 1 or samples < 1:
        raise ValueError(f"batch_size and samples must be positive, got {batch_size} and {samples}")
    return (torch.rand(batch_size, samples, samples, 2, generator=generator) * 2 - 1).to(device)


def sample_grid(maps: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
    """Read B×C×H×W ``maps`` at B×S×T×2 ``coordinates`` → B×C×S×T (bilinear, ``align_corners=True``:
    -1 and 1 are the centres of the first and last cells; border padding)."""
    _check_maps("sample_grid maps", maps)
    if coordinates.dim() != 4 or coordinates.shape[-1] != 2 or coordinates.shape[0] != maps.shape[0]:
        raise ValueError(f"coordinates must be B×S×T×2 with B = {maps.shape[0]}, got {tuple(coordinates.shape)}")
    return F.grid_sample(maps, coordinates.to(maps.dtype), mode="bilinear", padding_mode="border",
                         align_corners=True)
