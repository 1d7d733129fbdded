"""Deep-to-shallow supervision (PASS, Gao et al. TPAMI 2022, §4.1).

A shallower stage (stage 3 of the ResNet) gets its own heads: a pixel MLP (1×1 convs, keeping the
stage's width), global average pooling and an image MLP to the D-dimensional embedding space, then L2
normalisation. Its scores against the shared prototypes, held fixed (``C.detach()``), predict the deep
Sinkhorn codes of the *other* large crop, exactly like SwAV's swapped prediction:

    L_d2s = ½ Σ_{s ∈ {a, b}} -Σ_k q_s,k log softmax(z^shallow_{t≠s}·C^T / τ)_k.

The pre-training loss is (L_swav + L_d2s) / 2 + L_p2p.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..ssl.swav import float32_loss
from .p2p import conv_mlp


def image_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Linear → BN → ReLU → Linear → BN (no affine): PASS's image projection head, in → hidden → out."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim), nn.BatchNorm1d(out_dim, affine=False))


class ShallowHead(nn.Module):
    """Stage features B×C_s×h×w → L2-normalised embedding B×D (pixel MLP, average pool, image MLP)."""

    def __init__(self, in_channels: int, hidden: int, dim: int):
        super().__init__()
        self.pixel_mlp = conv_mlp(in_channels, hidden, in_channels)
        self.image_mlp = image_mlp(in_channels, hidden, dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = self.pixel_mlp(features).mean(dim=(2, 3))
        return F.normalize(self.image_mlp(pooled), dim=1)


@float32_loss
def deep_to_shallow_loss(shallow_scores: Sequence[torch.Tensor], codes: Sequence[torch.Tensor],
                         temperature: float = 0.1) -> torch.Tensor:
    """Swapped prediction of the deep codes of crop s (``codes[s]``, B×K) by the shallow scores of the
    other large crop (``shallow_scores[1 - s]``, B×K, computed with detached prototypes)."""
    if len(shallow_scores) != 2 or len(codes) != 2:
        raise ValueError("deep-to-shallow supervision pairs the two large crops: pass two score and two code tensors")
    losses = [-(q * F.log_softmax(shallow_scores[1 - s] / temperature, dim=1)).sum(dim=1).mean()
              for s, q in enumerate(codes)]
    return (losses[0] + losses[1]) / 2
