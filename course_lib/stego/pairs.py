"""Which images STEGO pairs: k-nearest-neighbour partners and in-batch negatives (§3.2).

- Every image is summarised by the spatial mean of its patch features, L2-normalised; its neighbours
  are the images of highest cosine similarity to it. The top :data:`TOP_K` = 30 are stored per image
  (the image itself is usually rank 0), computed once and cached (official ``src/precompute_knns.py``).
- A training sample's kNN partner is drawn uniformly from ranks 1..7 (``num_neighbors``) of its row
  (official ``ContrastiveSegDataset``).
- Negatives are other images of the same batch: each of the ``neg_samples`` (5) terms pairs image i with
  image σ(i) for a random permutation σ without fixed points, so no image is ever its own negative.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

TOP_K = 30


def global_descriptors(features: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """N×C unit vectors: the spatial mean of N×C×h×w patch features, L2-normalised (float32)."""
    if features.dim() != 4:
        raise ValueError(f"features must be N×C×h×w, got {tuple(features.shape)}")
    means = [features[start:start + batch_size].float().mean(dim=(2, 3))
             for start in range(0, len(features), batch_size)]
    return F.normalize(torch.cat(means), dim=1, eps=1e-10)


@torch.no_grad()
def knn_table(descriptors: torch.Tensor, k: int = TOP_K, batch_size: int = 1024) -> torch.Tensor:
    """N×k indices of each row's k most cosine-similar rows (itself included), best first.

    Args:
        descriptors: N×C unit vectors (:func:`global_descriptors`), on any device.
        k: neighbours kept; must not exceed N.
    """
    if descriptors.dim() != 2:
        raise ValueError(f"descriptors must be N×C, got {tuple(descriptors.shape)}")
    n = len(descriptors)
    if not 1 <= k <= n:
        raise ValueError(f"cannot keep the top {k} neighbours of {n} images; need 1 <= k <= N")
    rows = [torch.topk(descriptors[start:start + batch_size] @ descriptors.T, k, dim=1).indices
            for start in range(0, n, batch_size)]
    return torch.cat(rows).cpu()


def cached_knn_table(path: str | os.PathLike, n_items: int, descriptors: Callable[[], torch.Tensor],
                     k: int = TOP_K) -> torch.Tensor:
    """The N×k :func:`knn_table` of ``descriptors()`` (N×C unit vectors, e.g. :func:`global_descriptors`),
    read from ``path`` (.npy) when present, else computed once and written there atomically.

    A cached table of another shape is an error, never silently reused.
    """
    path = Path(path)
    k = min(k, n_items)
    if path.is_file():
        table = torch.from_numpy(np.load(path))
        if table.shape != (n_items, k):
            raise ValueError(f"the kNN table at {path} has shape {tuple(table.shape)}, expected {(n_items, k)}: "
                             "delete it to recompute")
        return table
    vectors = descriptors()
    if len(vectors) != n_items:
        raise ValueError(f"{len(vectors)} descriptors for {n_items} images")
    table = knn_table(vectors, k)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".part")
    with open(temporary, "wb") as file:
        np.save(file, table.numpy())
    os.replace(temporary, path)
    return table


def draw_positives(table: torch.Tensor, indices: torch.Tensor, num_neighbors: int = 7,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """For each image index, a partner drawn uniformly from ranks 1..``num_neighbors`` of its kNN row
    (fewer when the table has fewer columns, e.g. a set of under 8 images)."""
    if table.shape[1] < 2 or num_neighbors < 1:
        raise ValueError(f"a kNN table of {table.shape[1]} column(s) and num_neighbors={num_neighbors} leave no "
                         "partner to draw: need at least 2 images and num_neighbors >= 1")
    ranks = torch.randint(1, min(num_neighbors, table.shape[1] - 1) + 1, (len(indices),), generator=generator)
    return table[indices.cpu(), ranks]


def derangement(size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random permutation σ of 0..size-1 with σ(i) ≠ i for every i.

    σ(i) = p[(p⁻¹(i) + s) mod size] for a random permutation p and a random shift s in 1..size-1: i is
    mapped to the element s places after it in a random cyclic order.
    """
    if size < 2:
        raise ValueError(f"negatives need at least 2 images per batch, got {size}")
    order = torch.randperm(size, generator=generator)
    position = torch.empty_like(order)
    position[order] = torch.arange(size)
    shift = int(torch.randint(1, size, (1,), generator=generator))
    return order[(position + shift) % size]
