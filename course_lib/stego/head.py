"""STEGO's segmentation head: frozen patch features → low-dimensional codes (§3.3).

The official ``DinoFeaturizer`` (``mhamilton723/STEGO``, ``src/modules.py``) maps the C-dim features f
to D-dim codes with the sum of a linear and a non-linear branch, each reading its own dropped-out copy
of the features (``Dropout2d(0.1)``: whole channels are zeroed)::

    S(f) = W₁ · drop(f) + W₃ · ReLU(W₂ · drop(f))          (1×1 convolutions; W₂: C→C, W₁, W₃: →D)

and, during training, the feature correspondence F is built from a third dropped-out copy of f
(``dropout: True`` in the official config). In eval mode every dropout is the identity.
"""
from __future__ import annotations

import torch
from torch import nn


class StegoHead(nn.Module):
    """Linear + (1×1, ReLU, 1×1) branches, summed; each with its own ``Dropout2d`` on the input.

    Args:
        in_channels: C, the backbone's feature channels.
        code_dim: D, the code dimension (70 in the official configs).
        dropout: channel-dropout probability of each branch's input and of the distillation signal.
        nonlinear: add the non-linear branch (official ``projection_type: nonlinear``).
    """

    def __init__(self, in_channels: int, code_dim: int = 70, dropout: float = 0.1, nonlinear: bool = True):
        super().__init__()
        if in_channels < 1 or code_dim < 1:
            raise ValueError(f"in_channels and code_dim must be positive, got {in_channels} and {code_dim}")
        self.in_channels, self.code_dim = in_channels, code_dim
        self.linear_dropout = nn.Dropout2d(dropout)
        self.linear = nn.Conv2d(in_channels, code_dim, (1, 1))
        self.nonlinear = None
        if nonlinear:
            self.nonlinear_dropout = nn.Dropout2d(dropout)
            self.nonlinear = nn.Sequential(nn.Conv2d(in_channels, in_channels, (1, 1)), nn.ReLU(),
                                           nn.Conv2d(in_channels, code_dim, (1, 1)))
        self.signal_dropout = nn.Dropout2d(dropout)

    def forward(self, features: torch.Tensor, with_signal: bool = False):
        """Codes B×D×h×w of B×C×h×w features; with ``with_signal`` also the dropped-out features used as
        the distillation signal: ``(signal B×C×h×w, codes)``."""
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(f"features must be B×{self.in_channels}×h×w, got {tuple(features.shape)}")
        codes = self.linear(self.linear_dropout(features))
        if self.nonlinear is not None:
            codes = codes + self.nonlinear(self.nonlinear_dropout(features))
        if with_signal:
            return self.signal_dropout(features), codes
        return codes
