"""Probes on frozen features: a linear probe, STEGO's cluster probe and mini-batch spherical k-means.

All three read B×C×h×w feature maps (any device) and predict B×H×W ids at a requested label size.

- :class:`LinearProbe` is STEGO's supervised probe: a 1×1 convolution ``nn.Conv2d(C, K, (1, 1))`` on
  detached features; its logits are upsampled bilinearly (``align_corners=False``) to the label size and
  trained with cross-entropy over the pixels whose label lies in ``0..K-1`` (STEGO masks
  ``(label >= 0) & (label < n_classes)``; -1 and ImageNet-S's 1000 are thereby ignored), with Adam at
  lr 5e-3 (``mhamilton723/STEGO``, ``src/train_segmentation.py``).
- :class:`ClusterProbe` is STEGO's ``ClusterLookup`` (``src/modules.py``): K learnable centres
  (initialised from a standard normal), cosine scores between L2-normalised features and centres, hard
  (argmax) assignment and the loss ``-(one_hot(argmax) · scores).sum(1).mean()``, i.e. minus the mean
  cosine of each pixel to its nearest centre; trained with Adam at lr 5e-3. At evaluation STEGO upsamples
  the features bilinearly to the label size before assigning, as :meth:`ClusterProbe.predict` does.
- :class:`MiniBatchSphericalKMeans` is the same objective solved by mini-batch k-means on the unit sphere
  (Sculley, "Web-scale k-means clustering", WWW 2010, with the cosine as similarity): seeded spherical
  k-means++ initialisation, per-centre running means, and centres left without points during an epoch
  re-seeded on the worst-fitting points, so that no centre is ever undefined (never NaN).

Since the bilinear weights sum to one, upsampling the logits of a 1×1 convolution equals applying it to
upsampled features; the linear probe therefore upsamples its (fewer) logits.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import get_device, progress

Size = int | Sequence[int] | None


def check_features(features: torch.Tensor, channels: int | None = None, name: str = "features") -> None:
    """Raise a clear error unless ``features`` is a float B×C×h×w tensor (with ``channels`` channels)."""
    if not isinstance(features, torch.Tensor) or features.ndim != 4:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"{name} must be a B×C×h×w tensor, got {shape}")
    if not features.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got dtype {features.dtype}")
    if channels is not None and features.shape[1] != channels:
        raise ValueError(f"{name} have {features.shape[1]} channels, expected {channels}")


def check_labels(features: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise a clear error unless ``labels`` is an integer N×H×W tensor with one map per feature map."""
    if not isinstance(labels, torch.Tensor) or labels.ndim != 3:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an N×H×W tensor, got {shape}")
    if labels.is_floating_point():
        raise TypeError(f"labels must be integer class ids, got dtype {labels.dtype}")
    if labels.shape[0] != features.shape[0]:
        raise ValueError(f"{features.shape[0]} feature maps but {labels.shape[0]} label maps")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` picks :func:`course_lib.config.get_device`."""
    return device if isinstance(device, torch.device) else get_device(device)


def output_size(features: torch.Tensor, size: Size) -> tuple[int, int]:
    """``size`` as (H, W); an int is a square; ``None`` keeps the feature size h×w."""
    if size is None:
        return int(features.shape[-2]), int(features.shape[-1])
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def segmentation_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of B×K×h×w ``logits``, upsampled bilinearly to the B×H×W ``labels``.

    Pixels whose label is outside ``0..K-1`` (-1, ImageNet-S's 1000) are ignored, as in STEGO; a batch
    without any valid pixel gives a zero loss (never NaN) that still carries a gradient.
    """
    n_classes = logits.shape[1]
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    labels = labels.to(logits.device).long()
    valid = (labels >= 0) & (labels < n_classes)
    if not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], labels[valid])


def train_segmentation_head(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, *, epochs: int,
                            lr: float, batch_size: int, seed: int = 0, weight_decay: float = 0.0,
                            device: str | torch.device | None = None, desc: str = "head") -> list[float]:
    """Train ``head`` (B×C×h×w → B×K×h×w logits) on frozen ``features`` N×C×h×w, ``labels`` N×H×W.

    Adam (AdamW when ``weight_decay`` > 0), :func:`segmentation_cross_entropy`, mini-batches of images
    shuffled by ``seed``. Returns the mean loss of each epoch.
    """
    check_features(features)
    check_labels(features, labels)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    device = resolve_device(device)
    head.to(device).train()
    optimizer = (torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay) if weight_decay
                 else torch.optim.Adam(head.parameters(), lr=lr))
    generator = torch.Generator().manual_seed(seed)
    history = []
    for _ in progress(range(epochs), desc=f"training {desc}", unit="epoch"):
        order = torch.randperm(len(features), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            batch = features[index].to(device).detach()
            loss = segmentation_cross_entropy(head(batch), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        history.append(total / len(order))
    head.eval()
    return history


@torch.no_grad()
def predict_segmentation(head: nn.Module, features: torch.Tensor, size: Size = None,
                         batch_size: int = 8) -> torch.Tensor:
    """Class ids N×H×W: ``head``'s logits upsampled bilinearly to ``size`` (default h×w), then argmax."""
    check_features(features)
    height, width = output_size(features, size)
    device = next(head.parameters()).device
    head.eval()
    predictions = []
    for start in range(0, len(features), batch_size):
        logits = head(features[start:start + batch_size].to(device))
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        predictions.append(logits.argmax(1).to(features.device))
    return torch.cat(predictions)


class LinearProbe(nn.Module):
    """STEGO's linear probe: a 1×1 convolution from C feature channels to K class logits.

    Args:
        in_channels: C.
        n_classes: K; labels outside ``0..K-1`` are ignored when training.
        seed: seeds the initial weights.
    """

    def __init__(self, in_channels: int, n_classes: int, seed: int = 0):
        super().__init__()
        if in_channels < 1 or n_classes < 1:
            raise ValueError(f"in_channels and n_classes must be positive, got {in_channels} and {n_classes}")
        self.in_channels, self.n_classes = in_channels, n_classes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.conv = nn.Conv2d(in_channels, n_classes, (1, 1))
        self.loss_history: list[float] = []

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits B×K×h×w of B×C×h×w ``features``."""
        check_features(features, self.in_channels)
        return self.conv(features)

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against B×H×W ``labels`` on detached features (for a training loop)."""
        check_labels(features, labels)
        return segmentation_cross_entropy(self(features.detach()), labels)

    def fit(self, features: torch.Tensor, labels: torch.Tensor, epochs: int = 20, lr: float = 5e-3,
            batch_size: int = 16, seed: int = 0, device: str | torch.device | None = None) -> "LinearProbe":
        """Train on N×C×h×w ``features`` and N×H×W ``labels`` (Adam, lr 5e-3 as STEGO); returns ``self``."""
        check_features(features, self.in_channels)
        self.loss_history = train_segmentation_head(self, features, labels, epochs=epochs, lr=lr,
                                                    batch_size=batch_size, seed=seed, device=device,
                                                    desc="linear probe")
        return self

    def predict(self, features: torch.Tensor, size: Size = None, batch_size: int = 8) -> torch.Tensor:
        """Class ids N×H×W at ``size`` (default the feature size h×w)."""
        check_features(features, self.in_channels)
        return predict_segmentation(self, features, size, batch_size)


def _pixels(features: torch.Tensor) -> torch.Tensor:
    """N×C points from N×C points or B×C×h×w maps (pixels as rows)."""
    if features.ndim == 2:
        return features
    check_features(features)
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1, eps=1e-10)


def spherical_kmeans_plus_plus(points: torch.Tensor, n_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding on the sphere: K rows of the unit ``points`` (N×C).

    Each new centre is the best of ``2 + ⌊ln K⌋`` candidates (as scikit-learn's greedy k-means++), drawn
    with probability ∝ 1 − (best cosine to the centres so far), i.e. ∝ the squared Euclidean distance
    on the sphere; the candidate that most lowers Σ (1 − best cosine) wins. Candidates are drawn
    uniformly when every point already coincides with a centre.
    """
    n_trials = 2 + int(math.log(n_clusters))
    first = torch.randint(len(points), (1,), generator=generator).item()
    centres = [points[first]]
    best = points @ points[first]
    for _ in range(1, n_clusters):
        weights = (1.0 - best).clamp(min=0).cpu().double()
        if weights.sum() <= 0:
            weights = torch.ones_like(weights)
        candidates = torch.multinomial(weights, n_trials, replacement=True, generator=generator).to(points.device)
        improved = torch.maximum(best[:, None], points @ points[candidates].T)
        winner = (1.0 - improved).clamp(min=0).sum(0).argmin()
        centres.append(points[candidates[winner]])
        best = improved[:, winner]
    return torch.stack(centres)


def upsampled_cosines(features: torch.Tensor, centres: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B×K×H×W cosine similarities of B×C×h×w features, upsampled bilinearly to ``size`` and L2-normalised,
    with K×C unit centres."""
    batch = features.to(centres.device).float()
    if tuple(size) != tuple(batch.shape[-2:]):
        batch = F.interpolate(batch, size=tuple(size), mode="bilinear", align_corners=False)
    return torch.einsum("bchw,kc->bkhw", F.normalize(batch, dim=1, eps=1e-10), centres)


@torch.no_grad()
def assign_upsampled(features: torch.Tensor, centres: torch.Tensor, size: Size = None,
                     batch_size: int = 8) -> torch.Tensor:
    """Cluster ids B×H×W: features upsampled bilinearly to ``size`` (default h×w), L2-normalised, then
    the centre (K×C, unit) of highest cosine."""
    check_features(features, centres.shape[1])
    height, width = output_size(features, size)
    return torch.cat([upsampled_cosines(features[start:start + batch_size], centres, (height, width))
                      .argmax(1).to(features.device) for start in range(0, len(features), batch_size)])


class ClusterProbe(nn.Module):
    """STEGO's cluster probe (``ClusterLookup``): K learnable centres, cosine scores, hard assignment.

    Args:
        in_channels: C.
        n_classes: K, the number of clusters (STEGO uses the number of classes plus ``extra_clusters``).
        seed: seeds the standard-normal initial centres.
    """

    def __init__(self, in_channels: int, n_classes: int, seed: int = 0):
        super().__init__()
        if in_channels < 1 or n_classes < 1:
            raise ValueError(f"in_channels and n_classes must be positive, got {in_channels} and {n_classes}")
        self.in_channels, self.n_classes = in_channels, n_classes
        generator = torch.Generator().manual_seed(seed)
        self.clusters = nn.Parameter(torch.randn(n_classes, in_channels, generator=generator))
        self.loss_history: list[float] = []

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine scores B×K×h×w between L2-normalised ``features`` B×C×h×w and centres."""
        check_features(features, self.in_channels)
        return torch.einsum("bchw,kc->bkhw", F.normalize(features, dim=1, eps=1e-10),
                            F.normalize(self.clusters, dim=1, eps=1e-10))

    def loss(self, features: torch.Tensor) -> torch.Tensor:
        """STEGO's cluster loss on detached features: −mean over pixels of Σ_k one_hot(argmax)_k · score_k."""
        scores = self(features.detach())
        assignment = F.one_hot(scores.argmax(1), self.n_classes).permute(0, 3, 1, 2).to(scores.dtype)
        return -(assignment * scores).sum(1).mean()

    def fit(self, features: torch.Tensor, epochs: int = 20, lr: float = 5e-3, batch_size: int = 16,
            init: str = "k-means++", seed: int = 0,
            device: str | torch.device | None = None) -> "ClusterProbe":
        """Train on N×C×h×w ``features`` with Adam (lr 5e-3 as STEGO); returns ``self``.

        ``init="k-means++"`` first re-seeds the centres by spherical k-means++ on the pixels (a centre
        that no pixel chooses gets no gradient, so a random start can leave clusters dead);
        ``init="random"`` keeps STEGO's standard-normal centres.
        """
        check_features(features, self.in_channels)
        if init not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++' or 'random', got {init!r}")
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
        device = resolve_device(device)
        generator = torch.Generator().manual_seed(seed)
        if init == "k-means++":
            batch, _, height, width = features.shape
            sample = torch.randperm(batch * height * width, generator=generator)[:50_000].to(features.device)
            points = _unit(features.flatten(2)[sample // (height * width), :, sample % (height * width)])
            with torch.no_grad():
                centres = spherical_kmeans_plus_plus(points, self.n_classes, generator)
                self.clusters.copy_(centres.to(self.clusters))
        self.to(device).train()
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.loss_history = []
        for _ in progress(range(epochs), desc="training cluster probe", unit="epoch"):
            order = torch.randperm(len(features), generator=generator)
            total = 0.0
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                loss = self.loss(features[index].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(index)
            self.loss_history.append(total / len(order))
        return self.eval()

    def predict(self, features: torch.Tensor, size: Size = None, batch_size: int = 8) -> torch.Tensor:
        """Cluster ids N×H×W; features upsampled bilinearly to ``size`` (default h×w) first, as STEGO."""
        centres = F.normalize(self.clusters.detach(), dim=1, eps=1e-10)
        return assign_upsampled(features, centres, size, batch_size)


class MiniBatchSphericalKMeans:
    """Mini-batch k-means with the cosine similarity (centres on the unit sphere), seeded.

    Args:
        n_clusters: K.
        batch_size: points per update.
        epochs: passes over the (shuffled) points.
        init: ``"k-means++"`` (greedy spherical k-means++ on at most ``init_size`` points) or
            ``"random"`` (K random points).
        seed: seeds the initialisation and the shuffling.
        device: where to compute (default: the device of the features).

    After :meth:`fit`: ``cluster_centers_`` (K×C, unit rows), ``counts_`` (points per centre in the
    last epoch) and ``n_reseeded_`` (how many times a centre without points was moved).
    """

    def __init__(self, n_clusters: int, batch_size: int = 4096, epochs: int = 10, init: str = "k-means++",
                 init_size: int = 20_000, seed: int = 0, device: str | torch.device | None = None):
        if n_clusters < 1:
            raise ValueError(f"n_clusters must be positive, got {n_clusters}")
        if batch_size < 1 or epochs < 1:
            raise ValueError(f"batch_size and epochs must be positive, got {batch_size} and {epochs}")
        if init not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++' or 'random', got {init!r}")
        self.n_clusters, self.batch_size, self.epochs = n_clusters, batch_size, epochs
        self.init, self.init_size, self.seed, self.device = init, init_size, seed, device
        self.cluster_centers_: torch.Tensor | None = None
        self.counts_: torch.Tensor | None = None
        self.n_reseeded_ = 0

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> "MiniBatchSphericalKMeans":
        """Cluster N×C points or the pixels of B×C×h×w maps; returns ``self``."""
        points = _pixels(features)
        if not points.is_floating_point():
            raise TypeError(f"features must be a float tensor, got dtype {points.dtype}")
        if len(points) < self.n_clusters:
            raise ValueError(f"{len(points)} points cannot make {self.n_clusters} clusters")
        device = torch.device(self.device) if self.device is not None else points.device
        points = _unit(points.to(device))
        generator = torch.Generator().manual_seed(self.seed)
        if self.init == "k-means++":
            sample = torch.randperm(len(points), generator=generator)[:max(self.init_size, self.n_clusters)]
            centres = spherical_kmeans_plus_plus(points[sample.to(device)], self.n_clusters, generator)
        else:
            centres = points[torch.randperm(len(points), generator=generator)[:self.n_clusters].to(device)]
        totals = torch.zeros(self.n_clusters, device=device)
        self.n_reseeded_ = 0
        n_batches = math.ceil(len(points) / self.batch_size)
        for _ in progress(range(self.epochs), desc="spherical k-means", unit="epoch"):
            order = torch.randperm(len(points), generator=generator).to(device)
            epoch_counts = torch.zeros(self.n_clusters, device=device)
            for batch_index in range(n_batches):
                batch = points[order[batch_index * self.batch_size:(batch_index + 1) * self.batch_size]]
                similarity = batch @ centres.T
                assignment = similarity.argmax(1)
                counts = torch.bincount(assignment, minlength=self.n_clusters).float()
                sums = torch.zeros_like(centres).index_add_(0, assignment, batch)
                # running mean of the assigned points (learning rate 1/count per point), back on the sphere
                updated = centres * totals[:, None] + sums
                norms = updated.norm(dim=1, keepdim=True)
                keep = (counts[:, None] == 0) | (norms < 1e-8)
                centres = torch.where(keep, centres, updated / norms.clamp(min=1e-8))
                totals += counts
                epoch_counts += counts
            centres, totals = self._reseed_empty(centres, totals, epoch_counts, batch, similarity)
            self.counts_ = epoch_counts.long().cpu()
        self.cluster_centers_ = centres
        return self

    def _reseed_empty(self, centres: torch.Tensor, totals: torch.Tensor, counts: torch.Tensor,
                      batch: torch.Tensor, similarity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move centres that got no point this epoch onto the worst-fitting points of the last batch."""
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty) == 0:
            return centres, totals
        worst = similarity.max(1).values.argsort()[:len(empty)]
        empty = empty[:len(worst)]
        centres, totals = centres.clone(), totals.clone()
        centres[empty] = batch[worst]
        totals[empty] = 0
        self.n_reseeded_ += len(empty)
        return centres, totals

    def predict(self, features: torch.Tensor, size: Size = None, batch_size: int = 8) -> torch.Tensor:
        """Cluster ids: N for N×C points; B×H×W for B×C×h×w maps, upsampled bilinearly to ``size`` first."""
        if self.cluster_centers_ is None:
            raise RuntimeError("call fit() before predict()")
        centres = self.cluster_centers_
        if features.ndim == 2:
            if features.shape[1] != centres.shape[1]:
                raise ValueError(f"features have {features.shape[1]} channels, the centres {centres.shape[1]}")
            return (_unit(features.to(centres.device)) @ centres.T).argmax(1).to(features.device)
        return assign_upsampled(features, centres, size, batch_size)
