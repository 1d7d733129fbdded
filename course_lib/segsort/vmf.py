"""Pixel sorting: von Mises-Fisher (spherical) k-means of pixel embeddings into segments.

SegSort (Hwang et al., ICCV 2019, Sec. 3, "pixel sorting") models each segment as a von Mises-Fisher distribution on the
unit hypersphere with mean direction μ (the segment's *prototype*) and a shared concentration κ. With a
shared κ, maximum-likelihood clustering is hard-EM spherical k-means:

- E-step: every pixel joins the segment whose prototype has the largest cosine similarity;
- M-step: a prototype is the normalised sum of its pixels, μ = Σ e / ‖Σ e‖.

The features that are clustered are the embedding concatenated with the pixel's (y, x) position in [0, 1],
re-normalised ([e; y; x] / ‖[e; y; x]‖), so that segments stay spatially compact. Clustering starts
from a regular grid (the official ``num_clusters = 5`` is a 5×5 grid, 25 segments) and runs a fixed
number of iterations (10). Each image is clustered on its own, all images of a batch at once.

A segment that loses all its pixels stays empty (its prototype is the zero vector and no pixel is ever
assigned to it again): nothing is divided by zero, so no NaN appears. The prototypes used for the loss
and for retrieval are recomputed from the embedding alone (:func:`segment_prototypes`), without the
position channels.

Segment ids are *per image* (0..K-1) in the output of :func:`vmf_cluster`; :func:`batch_segment_ids`
turns them into ids that are unique across the batch (an offset per image, then compacted to 0..S-1).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-12


def _pair(grid: int | tuple[int, int]) -> tuple[int, int]:
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must be positive, got {grid!r}")
    return int(rows), int(cols)


def grid_segments(grid: int | tuple[int, int], height: int, width: int,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """The initial segmentation: a regular ``rows×cols`` grid over an ``height×width`` map.

    Cells are ``ceil(height / rows)`` × ``ceil(width / cols)`` pixels (as in the official code), ids
    ``row · cols + col``; when a side is not divisible the last cells are smaller, and a grid finer than
    the map leaves some ids unused (those clusters start empty). Returns H×W int64.
    """
    rows, cols = _pair(grid)
    if height < 1 or width < 1:
        raise ValueError(f"the map must be at least 1×1, got {height}×{width}")
    cell_height, cell_width = math.ceil(height / rows), math.ceil(width / cols)
    y = torch.arange(height, device=device) // cell_height
    x = torch.arange(width, device=device) // cell_width
    return y[:, None] * cols + x[None, :]


def location_features(height: int, width: int, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """2×H×W pixel coordinates (y, x), each from 0 (top / left) to 1 (bottom / right)."""
    y = torch.linspace(0, 1, height, device=device, dtype=dtype)
    x = torch.linspace(0, 1, width, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(y, x, indexing="ij"))


def _check_embeddings(embeddings: torch.Tensor) -> None:
    if embeddings.ndim != 4:
        raise ValueError(f"embeddings must be B×D×H×W, got shape {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise TypeError(f"embeddings must be a float tensor, got dtype {embeddings.dtype}")


def _check_segments(segments: torch.Tensor, embeddings: torch.Tensor) -> None:
    if segments.shape != (embeddings.shape[0], *embeddings.shape[2:]):
        raise ValueError(f"segments {tuple(segments.shape)} must be B×H×W of the embeddings "
                         f"{tuple(embeddings.shape)}")
    if segments.is_floating_point():
        raise TypeError("segments must be integer ids")


def clustering_features(embeddings: torch.Tensor, locations: torch.Tensor | None = None) -> torch.Tensor:
    """B×D×H×W embeddings → B×(H·W)×(D+2) points [e/‖e‖; y; x] re-normalised to unit length.

    ``locations``: B×2×H×W (y, x) per pixel; default :func:`location_features` of the map (0 to 1). The
    official training passes the coordinates of the *original* image carried through scaling and cropping
    (``seg_models/image_reader.py:224-253``)."""
    _check_embeddings(embeddings)
    batch, _, height, width = embeddings.shape
    unit = F.normalize(embeddings, dim=1, eps=EPS)
    if locations is None:
        position = location_features(height, width, embeddings.device, embeddings.dtype).expand(batch, -1, -1, -1)
    elif locations.shape != (batch, 2, height, width):
        raise ValueError(f"locations {tuple(locations.shape)} must be B×2×H×W = {(batch, 2, height, width)}")
    else:
        position = locations.to(unit)
    features = F.normalize(torch.cat([unit, position], 1), dim=1, eps=EPS)
    return features.flatten(2).transpose(1, 2)


def mean_directions(points: torch.Tensor, labels: torch.Tensor, n_clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """M-step, batched: B×N×C points, B×N ids in 0..K-1 (-1 = not counted) → (B×K×C unit prototypes,
    B×K pixel counts). An empty cluster gets the zero vector (not NaN)."""
    batch, _, channels = points.shape
    slot = torch.where(labels >= 0, labels, n_clusters)        # ignored pixels go to an extra slot
    sums = points.new_zeros(batch, n_clusters + 1, channels).scatter_add_(
        1, slot[..., None].expand(-1, -1, channels), points)[:, :n_clusters]
    counts = torch.zeros(batch, n_clusters + 1, device=points.device, dtype=torch.long).scatter_add_(
        1, slot, torch.ones_like(slot))[:, :n_clusters]
    return sums / sums.norm(dim=2, keepdim=True).clamp(min=EPS), counts


def assign_to_nearest(points: torch.Tensor, prototypes: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """E-step, batched: each of the B×N points joins the non-empty prototype (B×K×C) of largest cosine."""
    similarity = points @ prototypes.transpose(1, 2)
    similarity = similarity.masked_fill((counts == 0)[:, None, :], float("-inf"))
    return similarity.argmax(2)


@torch.no_grad()
def vmf_cluster(embeddings: torch.Tensor, grid: int | tuple[int, int] = 5, iterations: int = 10,
                valid: torch.Tensor | None = None, return_history: bool = False,
                initial: torch.Tensor | None = None, locations: torch.Tensor | None = None):
    """Cluster every image of a batch into at most ``rows·cols`` segments (SegSort's pixel sorting).

    Args:
        embeddings: B×D×H×W pixel embeddings (normalised inside).
        grid: ``n`` for an n×n initial grid, or ``(rows, cols)``.
        iterations: EM iterations (the official value is 10).
        valid: optional B×H×W bool; invalid pixels (e.g. ignore labels) are left out and get id -1.
        return_history: also return the labelling after the grid initialisation and after every iteration.
        initial: optional B×H×W starting ids in 0..rows·cols-1 instead of the grid of this map (the official
            training starts from the grid of the original image, carried through the augmentation); -1: a
            pixel that no cluster holds at the start (it joins the nearest after the first M-step).
        locations: optional B×2×H×W (y, x) channels (see :func:`clustering_features`).

    Returns:
        B×H×W int64 per-image segment ids in 0..K-1 (-1 where not valid), and with ``return_history``
        a list of ``iterations + 1`` such maps.
    """
    _check_embeddings(embeddings)
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    batch, _, height, width = embeddings.shape
    rows, cols = _pair(grid)
    points = clustering_features(embeddings.detach(), locations)
    if initial is None:
        labels = grid_segments((rows, cols), height, width, embeddings.device).flatten().expand(batch, -1)
    elif initial.shape != (batch, height, width):
        raise ValueError(f"initial {tuple(initial.shape)} must be B×H×W = {(batch, height, width)}")
    else:
        labels = initial.reshape(batch, -1).long().to(embeddings.device)
        if (labels >= rows * cols).any():
            raise ValueError(f"initial ids must be below {rows * cols} for a {rows}×{cols} grid")
    if valid is not None:
        if valid.shape != (batch, height, width):
            raise ValueError(f"valid {tuple(valid.shape)} must be B×H×W = {(batch, height, width)}")
        keep = valid.reshape(batch, -1).to(embeddings.device)
        labels = torch.where(keep, labels, -1)
    history = [labels]
    for _ in range(iterations):
        prototypes, counts = mean_directions(points, labels, rows * cols)
        labels = assign_to_nearest(points, prototypes, counts)
        if valid is not None:
            labels = torch.where(keep, labels, -1)
        history.append(labels)
    shaped = [step.reshape(batch, height, width) for step in history]
    return (shaped[-1], shaped) if return_history else shaped[-1]


def batch_segment_ids(segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image segment ids (B×H×W, -1 ignored, any non-negative values) → ids unique in the batch.

    Image ``b``'s id ``s`` becomes ``b · M + s`` (``M`` = max id + 1, so images never collide), then
    the ids that occur are renumbered 0..S-1 in (image, id) order.

    Returns:
        ids: B×H×W int64 in 0..S-1 (-1 where ignored);
        image_index: S, the image each segment belongs to;
        local_id: S, the segment's id inside its image (the input value).
    """
    if segments.ndim != 3 or segments.is_floating_point():
        raise ValueError(f"segments must be a B×H×W integer tensor, got {tuple(segments.shape)} {segments.dtype}")
    segments = segments.long()
    valid = segments >= 0
    if not valid.any():
        raise ValueError("every pixel is ignored (-1): there is no segment")
    stride = int(segments.max()) + 1
    offsets = torch.arange(segments.shape[0], device=segments.device)[:, None, None] * stride
    keys, inverse = torch.unique(segments[valid] + offsets.expand_as(segments)[valid], return_inverse=True)
    ids = torch.full_like(segments, -1)
    ids[valid] = inverse
    return ids, keys // stride, keys % stride


def segment_prototypes(embeddings: torch.Tensor, ids: torch.Tensor, n_segments: int | None = None) -> torch.Tensor:
    """Prototypes μ_s = Σ e / ‖Σ e‖ of the (unit) embeddings of each segment (differentiable).

    Args:
        embeddings: B×D×H×W.
        ids: B×H×W batch-wide segment ids 0..S-1 (see :func:`batch_segment_ids`), -1 ignored.
        n_segments: S (default ``ids.max() + 1``).

    Returns:
        S×D unit prototypes (the zero vector for a segment without pixels).
    """
    _check_embeddings(embeddings)
    _check_segments(ids, embeddings)
    n_segments = int(ids.max()) + 1 if n_segments is None else n_segments
    pixels = F.normalize(embeddings, dim=1, eps=EPS).permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1])
    flat = ids.reshape(-1)
    keep = flat >= 0
    sums = pixels.new_zeros(n_segments, pixels.shape[1]).index_add(0, flat[keep], pixels[keep])
    return sums / sums.norm(dim=1, keepdim=True).clamp(min=EPS)
