"""Pixel-to-pixel alignment (PASS, Gao et al. TPAMI 2022, §4.1 "pixel-to-pixel representation alignment").

The two large crops a and b of an image overlap in a rectangle of the source image (when they overlap
at all). A regular G×G grid (G = 7) spans that rectangle; each crop's last feature map, after a 1×1-conv
projection g, is sampled at the grid points in its own coordinates (bilinear ``grid_sample``; a
mirrored crop reads its x coordinates mirrored), so that grid point (i, j) of both crops looks at the
same source pixel. A 1×1-conv predictor h maps one crop's samples to the other's, non-contrastively
(SimSiam-style): with z = g(f) and p = h(z) at the grid points,

    L_p2p = -½ [ cos(p_a, sg(z_b)) + cos(p_b, sg(z_a)) ],   averaged over the G² points and the pairs,

sg the stop-gradient.

How the grid is sampled, and what a pair of crops that do not overlap contributes, is a setting
(``PretrainConfig.p2p_padding``, :data:`P2P_PADDINGS`):

- ``"zeros"`` (official, the ImageNet-S presets): ``grid_sample`` pads with zeros (``F.grid_sample``'s
  default in ``LUSSeg/PASS src/resnet.py:472``), so a grid point on the overlap's edge, which lies on the
  outer edge of a feature cell (``align_corners=False``), mixes its cells with the zero padding; a pair
  whose crops do not overlap gets grids filled with −2 (:data:`NON_OVERLAP_GRID`, ``src/multicropdataset.py:
  215-218``), entirely outside the map: its z are 0, cos(p, 0) = 0, and the pair counts with cosine 0 in
  the mean over every pair and grid point (``main_pretrain.py:340-348``).
- ``"border"`` (the toy preset): samples clamp to the border cells, and only pairs that overlap count.

:func:`pixel_contrast_loss` is an optional contrastive companion (not in PASS; off in the ImageNet-S
presets): each grid point of z_a must pick out its partner in z_b among the grid points of the *other*
images of the batch (InfoNCE, as DenseCL). Its signal exists from the first step, which small-data runs
(the toy world) need: there the non-contrastive terms alone learn features no better than random ones.
Boxes are (x, y, w, h, flip) in source-image pixels (:mod:`course_lib.luss.multicrop`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ssl.dino import cross_image_info_nce
from ..ssl.swav import float32_loss

P2P_PADDINGS = ("zeros", "border")
"""How the P2P grid is sampled: ``"zeros"`` (official) or ``"border"`` (toy), see the module docstring."""
NON_OVERLAP_GRID = -2.0
"""The grid value of a pair of crops that do not overlap, with zero padding (``LUSSeg/PASS
src/multicropdataset.py:217-218``): every sample falls outside the feature map and reads 0."""


def _crop_coordinates(boxes: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Source-pixel coordinates xs (B×G), ys (B×G) → B×G×G×2 ``grid_sample`` grid of each crop
    (last dim (x, y) in [-1, 1], ``align_corners=False``: -1 and 1 are the crop's outer edges)."""
    u = (xs - boxes[:, 0:1]) / boxes[:, 2:3]
    v = (ys - boxes[:, 1:2]) / boxes[:, 3:4]
    u = torch.where(boxes[:, 4:5] > 0, 1 - u, u)
    size = xs.shape[1]
    grid = torch.stack([u[:, None, :].expand(-1, size, -1), v[:, :, None].expand(-1, -1, size)], dim=-1)
    return 2 * grid - 1


def overlap_grids(boxes_a: torch.Tensor, boxes_b: torch.Tensor, grid_size: int = 7, outside: float | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The G×G grid spanning the overlap of crops a and b, in each crop's coordinates.

    Args:
        boxes_a, boxes_b: B×5 boxes (x, y, w, h, flip) of the two crops in source pixels.
        grid_size: G (PASS: 7).
        outside: the value of both grids of a pair that does not overlap (official :data:`NON_OVERLAP_GRID`,
            −2: outside the map, zero samples); None leaves them as computed (meaningless).
    Returns:
        grid_a, grid_b: B×G×G×2 (x, y) in [-1, 1] for ``F.grid_sample(..., align_corners=False)``;
        grid point (i, j) of both is source point (x0 + j·(x1 - x0)/(G-1), y0 + i·(y1 - y0)/(G-1)),
        as ``LUSSeg/PASS src/multicropdataset.py:164-213`` (``get_grid``).
        overlap: B bool, False where the crops do not overlap.
    """
    if boxes_a.shape != boxes_b.shape or boxes_a.ndim != 2 or boxes_a.shape[1] != 5:
        raise ValueError(f"expected two B×5 box tensors, got {tuple(boxes_a.shape)} and {tuple(boxes_b.shape)}")
    if grid_size < 2:
        raise ValueError(f"grid_size must be >= 2, got {grid_size}")
    boxes_a, boxes_b = boxes_a.float(), boxes_b.float()
    x0 = torch.maximum(boxes_a[:, 0], boxes_b[:, 0])
    y0 = torch.maximum(boxes_a[:, 1], boxes_b[:, 1])
    x1 = torch.minimum(boxes_a[:, 0] + boxes_a[:, 2], boxes_b[:, 0] + boxes_b[:, 2])
    y1 = torch.minimum(boxes_a[:, 1] + boxes_a[:, 3], boxes_b[:, 1] + boxes_b[:, 3])
    overlap = (x1 > x0) & (y1 > y0)
    steps = torch.linspace(0, 1, grid_size, device=boxes_a.device)
    xs = x0[:, None] + steps * (x1 - x0)[:, None]
    ys = y0[:, None] + steps * (y1 - y0)[:, None]
    grid_a, grid_b = _crop_coordinates(boxes_a, xs, ys), _crop_coordinates(boxes_b, xs, ys)
    if outside is not None:
        apart = ~overlap[:, None, None, None]
        grid_a, grid_b = grid_a.masked_fill(apart, outside), grid_b.masked_fill(apart, outside)
    return grid_a, grid_b, overlap


def sample_at(features: torch.Tensor, grid: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """Bilinear samples of B×C×h×w features at a B×G×G×2 grid → B×C×G×G (``align_corners=False``);
    ``padding`` "border" clamps to the border cells, "zeros" reads 0 outside the map (official)."""
    if padding not in P2P_PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(P2P_PADDINGS)}, got {padding!r}")
    return F.grid_sample(features, grid, mode="bilinear", padding_mode=padding, align_corners=False)


@float32_loss
def pixel_to_pixel_loss(p_a: torch.Tensor, p_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                        overlap: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric negative cosine of predictions p (B×D×G×G) against stop-gradient targets z of the
    other crop, averaged over grid points and over the pairs that overlap (B bool ``overlap``; 0 when none
    does), or, with ``overlap=None``, over every pair as the official ``p2p_loss`` (``main_pretrain.py:
    340-348``; a pair sampled outside the map has z = 0 and cosine 0)."""
    cosine = (F.cosine_similarity(p_a, z_b.detach(), dim=1) + F.cosine_similarity(p_b, z_a.detach(), dim=1)) / 2
    if overlap is None:
        return -cosine.mean()
    per_pair = -cosine.flatten(1).mean(dim=1)
    weights = overlap.to(per_pair.dtype)
    return (per_pair * weights).sum() / weights.sum().clamp(min=1)


@float32_loss
def pixel_contrast_loss(z_a: torch.Tensor, z_b: torch.Tensor, overlap: torch.Tensor, temperature: float = 0.1,
                        n_samples: int | None = 1024) -> torch.Tensor:
    """Symmetric cross-image InfoNCE of the projections z_a, z_b (B×D×G×G) at the overlap grid points:
    point (i, j) of crop a against the same point of crop b, negatives the other images' points
    (:func:`course_lib.ssl.dino.cross_image_info_nce`); only overlapping pairs count (0 when none does)."""
    keep = overlap.bool()
    if int(keep.sum()) < 2:  # no other image to contrast with
        return (z_a.sum() + z_b.sum()) * 0.0
    points_a = F.normalize(z_a[keep].flatten(2).transpose(1, 2), dim=-1)  # B'×G²×D
    points_b = F.normalize(z_b[keep].flatten(2).transpose(1, 2), dim=-1)
    images = torch.arange(points_a.shape[0], device=z_a.device).repeat_interleave(points_a.shape[1])
    points_a, points_b = points_a.flatten(0, 1), points_b.flatten(0, 1)
    return (cross_image_info_nce(points_a, points_b, images, temperature, n_samples)
            + cross_image_info_nce(points_b, points_a, images, temperature, n_samples)) / 2


def conv_mlp(in_channels: int, hidden: int, out_channels: int, last_affine: bool = False) -> nn.Sequential:
    """1×1-conv MLP with BN: in → hidden → hidden → out, the last BN without affine (PASS's pixel heads)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
        nn.Conv2d(hidden, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
        nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels, affine=last_affine),
    )


class PixelToPixelHead(nn.Module):
    """Projection g (1×1-conv MLP C → hidden → hidden → D) and predictor h (D → D → D) of the P2P branch;
    ``padding`` is how the grid is sampled (:data:`P2P_PADDINGS`)."""

    def __init__(self, in_channels: int, hidden: int, dim: int, padding: str = "zeros"):
        super().__init__()
        if padding not in P2P_PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(P2P_PADDINGS)}, got {padding!r}")
        self.padding = padding
        self.projection = conv_mlp(in_channels, hidden, dim)
        self.predictor = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim),
                                       nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 1))

    def forward(self, features_a: torch.Tensor, features_b: torch.Tensor, grid_a: torch.Tensor,
                grid_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Last-stage features of crops a and b (B×C×h×w) and their grids → z_a, z_b, p_a, p_b (B×D×G×G)."""
        z = sample_at(self.projection(torch.cat([features_a, features_b])), torch.cat([grid_a, grid_b]), self.padding)
        p = self.predictor(z)
        batch = features_a.shape[0]
        return z[:batch], z[batch:], p[:batch], p[batch:]
