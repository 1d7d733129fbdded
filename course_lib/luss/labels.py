"""PASS label generation (Gao et al. TPAMI 2022, §4.3): attention-weighted clustering into pseudo-labels.

1. **Embeddings**: every training image's upsampled, un-normalised last features F weighted by the
   pixel attention a and average-pooled, v = mean_{h,w}(F ⊙ a), then L2-normalised (the baseline
   without attention pools F alone).
2. **Clustering**: k-means into K clusters (K = number of categories) with several restarts, the
   lowest inertia kept (official: faiss, 30 restarts, 20 iterations) — here in torch (CPU or GPU), or
   faiss when it is installed.
3. **Pixel labels**: each pixel takes the cluster (1..K) of the centroid most similar (cosine) to its
   feature, upsampled (nearest) to the image; pixels whose channel-mean attention ā (bilinear to the
   image) is below τ become 'other' (0).

The paper chooses τ where the validation mIoU peaks (:func:`tau_sweep`), i.e. with labelled data;
:func:`otsu_threshold` is a label-free alternative: Otsu's threshold on the histogram of ā over the
training pixels (the value that best separates the background and foreground modes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..config import progress
from ..data.label_png import IMAGENET_S_IGNORE
from ..evaluation.imagenet_s import ImageNetSEvaluator, image_presence, match_from_presence
from .attention import AttentionModel, upsampled_features
from .data import image_batches

DISTANCE_CHUNK = 65536  # points per block of the N×K distance matrix


@dataclass
class KMeansResult:
    """Centroids K×D, the assignment of each of the N points (0..K-1) and the inertia (sum of squared distances)."""

    centroids: torch.Tensor
    assignments: torch.Tensor
    inertia: float


def _nearest(points: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest centroid (squared Euclidean) and that squared distance, for N points."""
    indices, distances = [], []
    squared = (centroids ** 2).sum(dim=1)
    for chunk in points.split(DISTANCE_CHUNK):
        d = (chunk ** 2).sum(dim=1, keepdim=True) - 2 * chunk @ centroids.t() + squared
        best, index = d.min(dim=1)
        indices.append(index)
        distances.append(best.clamp(min=0))
    return torch.cat(indices), torch.cat(distances)


def _kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each next centroid drawn with probability ∝ squared distance to the chosen ones."""
    first = int(torch.randint(len(points), (1,), generator=generator))
    centroids = points[first:first + 1]
    _, distances = _nearest(points, centroids)
    for _ in range(1, k):
        weights = distances.double().cpu()
        index = int(torch.multinomial(weights, 1, generator=generator)) if weights.sum() > 0 else \
            int(torch.randint(len(points), (1,), generator=generator))
        centroids = torch.cat([centroids, points[index:index + 1]])
        distances = torch.minimum(distances, ((points - points[index]) ** 2).sum(dim=1))
    return centroids


def _lloyd(points: torch.Tensor, centroids: torch.Tensor, iterations: int) -> torch.Tensor:
    """Lloyd iterations; an empty cluster takes the point farthest from its centroid (never NaN)."""
    k = len(centroids)
    for _ in range(iterations):
        assignments, distances = _nearest(points, centroids)
        counts = torch.bincount(assignments, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assignments, points)
        centroids = sums / counts.clamp(min=1)[:, None].to(points.dtype)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):
            farthest = distances.argsort(descending=True)[: len(empty)]
            centroids[empty] = points[farthest]
    return centroids


def _faiss_kmeans(points: torch.Tensor, k: int, restarts: int, iterations: int, seed: int) -> KMeansResult:
    import faiss

    data = np.ascontiguousarray(points.detach().cpu().numpy().astype(np.float32))
    clustering = faiss.Kmeans(data.shape[1], k, niter=iterations, nredo=restarts, seed=seed,
                              max_points_per_centroid=10_000_000, gpu=points.is_cuda)
    clustering.train(data)
    distances, assignments = clustering.index.search(data, 1)
    return KMeansResult(torch.from_numpy(clustering.centroids).to(points.device),
                        torch.from_numpy(assignments[:, 0]).long().to(points.device), float(distances.sum()))


def kmeans(points: torch.Tensor, k: int, restarts: int = 10, iterations: int = 20, seed: int = 0,
           backend: str = "auto") -> KMeansResult:
    """Euclidean k-means of N×D ``points`` (on their device) into ``k`` clusters, keeping the restart of
    lowest inertia. ``backend``: ``"torch"``, ``"faiss"`` or ``"auto"`` (faiss when importable)."""
    if points.ndim != 2 or not torch.isfinite(points).all():
        raise ValueError(f"kmeans expects a finite N×D tensor, got shape {tuple(points.shape)}")
    if not 1 <= k <= len(points):
        raise ValueError(f"cannot make {k} clusters of {len(points)} points")
    if restarts < 1 or iterations < 1:
        raise ValueError("restarts and iterations must be >= 1")
    if backend not in ("auto", "torch", "faiss"):
        raise ValueError(f"unknown k-means backend {backend!r}")
    if backend != "torch":
        try:
            return _faiss_kmeans(points, k, restarts, iterations, seed)
        except ImportError:
            if backend == "faiss":
                raise ImportError("faiss is not installed: pip install 'course_lib[faiss]' or use backend='torch'") from None
    points = points.float()
    generator = torch.Generator().manual_seed(seed)
    best: KMeansResult | None = None
    for _ in range(restarts):
        centroids = _lloyd(points, _kmeans_plus_plus(points, k, generator), iterations)
        assignments, distances = _nearest(points, centroids)
        inertia = float(distances.sum())
        if best is None or inertia < best.inertia:
            best = KMeansResult(centroids, assignments, inertia)
    return best


def pooled_embeddings(features: torch.Tensor, attention: torch.Tensor | None = None) -> torch.Tensor:
    """L2-normalised mean over pixels of F ⊙ a (or of F alone): B×C×h×w → B×C."""
    weighted = features if attention is None else features * attention
    return F.normalize(weighted.mean(dim=(2, 3)), dim=1)


@torch.no_grad()
def embed_images(model: AttentionModel, dataset: Dataset, batch_size: int = 64, short_side: int | None = None,
                 crop: int | None = None, use_attention: bool = True, device: str | torch.device = "cpu") -> torch.Tensor:
    """N×C pooled embeddings of a dataset (official: short side 256, centre crop 224)."""
    model = model.to(device).eval()
    embeddings = []
    for images, _, _ in image_batches(dataset, batch_size, short_side, crop, desc="embedding"):
        if use_attention:
            features, attention = model.maps(images.to(device))
        else:
            features, attention = upsampled_features(model.backbone, images.to(device), model.upsample), None
        embeddings.append(pooled_embeddings(features, attention).cpu())
    return torch.cat(embeddings)


def cluster_ids(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Per-pixel cluster 1..K: the centroid of highest cosine similarity. B×C×h×w, K×C → B×h×w."""
    similarity = torch.einsum("bchw,kc->bkhw", F.normalize(features, dim=1), F.normalize(centroids, dim=1))
    return similarity.argmax(dim=1) + 1


@torch.no_grad()
def raw_label_maps(model: AttentionModel, images: torch.Tensor, centroids: torch.Tensor, size: tuple[int, int],
                   use_attention: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Cluster ids (B×H×W, 1..K, nearest-upsampled to ``size``) and the channel-mean attention ā
    (B×H×W, bilinear; None without attention) of a batch of normalised images."""
    features, attention = model.maps(images)
    ids = F.interpolate(cluster_ids(features, centroids.to(features.device))[:, None].float(), size=size,
                        mode="nearest")[:, 0].long()
    if not use_attention:
        return ids, None
    mean = F.interpolate(attention.mean(dim=1, keepdim=True), size=size, mode="bilinear", align_corners=False)
    return ids, mean[:, 0]


def apply_threshold(ids: torch.Tensor | np.ndarray, mean_attention: torch.Tensor | np.ndarray | None,
                    tau: float) -> torch.Tensor | np.ndarray:
    """Pseudo-labels: ``ids`` with 'other' (0) where ā < τ (unchanged without attention)."""
    if mean_attention is None:
        return ids
    if isinstance(ids, np.ndarray):
        return np.where(mean_attention < tau, 0, ids)
    return torch.where(mean_attention < tau, torch.zeros_like(ids), ids)


def otsu_from_histogram(histogram: torch.Tensor, low: float, high: float) -> float:
    """Otsu's threshold of values whose histogram over equal bins spanning [low, high] is ``histogram``:
    the bin edge that maximises the between-class variance w₀w₁(μ₀ - μ₁)²."""
    histogram = histogram.double().cpu()
    bins = len(histogram)
    if bins < 2 or histogram.sum() <= 0 or high <= low:
        raise ValueError("Otsu's threshold needs a non-empty histogram of at least two bins over low < high")
    edges = torch.linspace(low, high, bins + 1, dtype=torch.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = histogram.cumsum(0)
    weight_high = histogram.sum() - weight_low
    mass_low = (histogram * centres).cumsum(0)
    mean_low = mass_low / weight_low.clamp(min=1e-12)
    mean_high = (mass_low[-1] - mass_low) / weight_high.clamp(min=1e-12)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(between[:-1].argmax()) + 1])


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of a set of values (e.g. ā over all training pixels)."""
    values = values.detach().flatten().float().cpu()
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return low
    return otsu_from_histogram(torch.histc(values, bins=bins, min=low, max=high), low, high)


def to_imagenet_s_ids(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """Course labels (-1 ignore) → ImageNet-S ids (1000 ignore), as NumPy."""
    labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    return np.where(labels < 0, IMAGENET_S_IGNORE, labels)


def unsupervised_scores(predictions: Iterable[np.ndarray], ground_truth: Sequence[np.ndarray],
                        num_classes: int) -> tuple[dict[str, float | None], dict[int, int]]:
    """ImageNet-S metrics of the fully unsupervised protocol: predicted ids 1..K matched to categories by
    image-level presence (Hungarian), then scored ('other' included). Ground truth in ImageNet-S ids.
    Returns (scores in percent, match)."""
    predictions = [np.asarray(p) for p in predictions]
    presence = [image_presence(p, g, num_classes) for p, g in zip(predictions, ground_truth)]
    match = match_from_presence(np.stack([p for p, _ in presence]), np.stack([g for _, g in presence]))
    evaluator = ImageNetSEvaluator(num_classes, match=match)
    for prediction, gt in zip(predictions, ground_truth):
        evaluator.update(prediction, gt)
    return evaluator.compute(), match


def foreground_as_true_category(prediction: np.ndarray, gt: np.ndarray, num_classes: int,
                                name: str = "image") -> np.ndarray:
    """``prediction`` (H×W ids) with every non-'other' pixel set to the image's true category: the most
    frequent of 1..K in ``gt`` (ImageNet-S ids). The per-image step of :func:`mask_scores`."""
    gt = np.asarray(gt)
    counts = np.bincount(gt[(gt >= 1) & (gt <= num_classes)].ravel(), minlength=num_classes + 1)
    if counts.sum() == 0:
        raise ValueError(f"{name} has no category pixel in its ground truth: its masks cannot be scored")
    return np.where(np.asarray(prediction) > 0, int(counts.argmax()), 0)


def mask_scores(predictions: Iterable[np.ndarray], ground_truth: Iterable[np.ndarray],
                num_classes: int) -> dict[str, float | None]:
    """A diagnostic that **uses the ground-truth categories** (not a LUSS result): every predicted non-'other'
    pixel takes its image's true category (:func:`foreground_as_true_category`), then the ImageNet-S metrics
    with identity matching. It scores the object masks alone, whatever cluster each image got, and so
    separates "where is the object" from "which category is it" (compare with :func:`unsupervised_scores`)."""
    evaluator = ImageNetSEvaluator(num_classes)
    for index, (prediction, gt) in enumerate(zip(predictions, ground_truth)):
        evaluator.update(foreground_as_true_category(prediction, gt, num_classes, name=f"image {index}"), gt)
    return evaluator.compute()


def tau_sweep(samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], num_classes: int,
              taus: Sequence[float]) -> list[dict]:
    """The fully unsupervised ImageNet-S metrics of the pseudo-labels at every τ (the official ``--curve``).

    ``samples[i]`` = (cluster ids 1..K, ā, ground truth in ImageNet-S ids), H×W each; every τ gets its
    own presence matching. Returns one dict per τ: ``"tau"`` and the metrics of
    :class:`~course_lib.evaluation.imagenet_s.ImageNetSEvaluator` (percent)."""
    taus = np.asarray(taus, dtype=np.float64)
    if taus.ndim != 1 or len(taus) == 0:
        raise ValueError("taus must be a non-empty list of thresholds")
    n, k1 = len(samples), num_classes + 1
    pred_present = np.zeros((len(taus), n, k1), bool)
    gt_present = np.zeros((n, k1), bool)
    for index, (ids, attention, gt) in enumerate(progress(samples, desc="tau sweep: matching")):
        _, gt_present[index] = image_presence(ids, gt, num_classes)
        kept = gt != IMAGENET_S_IGNORE
        peak = np.full(k1, -np.inf)
        np.maximum.at(peak, ids[kept], attention[kept])  # an id survives τ when its best pixel has ā >= τ
        pred_present[:, index, 1:] = peak[None, 1:] >= taus[:, None]
    evaluators = [ImageNetSEvaluator(num_classes, match_from_presence(pred_present[t], gt_present))
                  for t in range(len(taus))]
    for ids, attention, gt in progress(samples, desc="tau sweep: scoring"):
        for tau, evaluator in zip(taus, evaluators):
            evaluator.update(apply_threshold(ids, attention, tau), gt)
    return [{"tau": float(tau), **evaluator.compute()} for tau, evaluator in zip(taus, evaluators)]
