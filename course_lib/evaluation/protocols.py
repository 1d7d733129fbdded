"""The LUSS evaluation protocols of ImageNet-S: distance matching and semi-supervised fine-tuning.

Gao et al., "Large-scale Unsupervised Semantic Segmentation" (TPAMI 2022) evaluate representations
without training a classifier by *distance matching*, and with a few labels by *semi-supervised
fine-tuning* on the ``train-semi`` split. Facts taken from the official code:

- Distance matching (``LUSSeg/PASS``, ``distance_matching/get_instance.py`` and
  ``distance_matching/inference_distance_matching.py``): on each labelled ``train-semi`` image the label
  map is resized to the feature size (nearest) and every label value present except 1000 ('other' = 0
  included) gives one reference embedding, the average feature of its pixels, labelled by that class.
  The references are L2-normalised, so scaling the average does not matter; queries are the
  L2-normalised pixel features of a validation image. Each query takes its k = 10 most cosine-similar
  references; each neighbour votes for its class with weight ``exp(cos / T)``, T = 0.07 (DINO's weighted
  k-NN); the class with the largest sum wins. The predicted id map (feature size) is upsampled to the
  image size with *nearest* interpolation. (PASS first upsamples its ResNet-50 features 4× bilinearly,
  for both references and queries: do that in the feature function if wanted.)
- Semi-supervised fine-tuning (``LUSSeg/ImageNetSegModel``, ``main_segfinetune.py`` and
  ``engine_segfinetune.py``): a 1×1 convolution head ``nn.Conv2d(C, K + 1, 1)`` on the patch features,
  cross-entropy with 1000 ignored, evaluation with the logits upsampled *bilinearly* to the label size
  before the argmax. The official baseline fine-tunes the whole ViT (AdamW, weight decay 0.05, layer
  decay 0.75, 50 epochs, warm-up 5); here the backbone stays frozen and only the head is trained, on
  features computed once (a head-only protocol that runs on a CPU).

Labels follow the course's datasets: H×W int64 with -1 = ignore (ImageNet-S's 1000 is mapped to -1 on
loading; a raw 1000 is ignored as well).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..data.transforms import normalize
from ..models.features import extract_features
from .probes import (
    LinearProbe,
    Size,
    check_features,
    check_labels,
    output_size,
    predict_segmentation,
    train_segmentation_head,
)

FeatureFn = Callable[[torch.Tensor], torch.Tensor]
"""A frozen backbone: ImageNet-normalised images B×3×H×W → features B×C×h×w."""

IMAGENET_S_IGNORE = 1000


def distance_matching_references(features: torch.Tensor, labels: torch.Tensor,
                                 ignore_index: int = IMAGENET_S_IGNORE) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference embeddings of LUSS distance matching: one per (image, class present) pair.

    Args:
        features: B×C×h×w features of the labelled images.
        labels: B×H×W class ids (0 = 'other' is a class; ids < 0 and ``ignore_index`` are skipped),
            resized to h×w with nearest interpolation, as the official code does.
    Returns:
        ``(embeddings, classes)``: R×C mean features of the segments (not normalised) and their R class
        ids, ordered by image then class. Images are independent: the references of several batches
        can be concatenated.
    """
    check_features(features)
    check_labels(features, labels)
    height, width = features.shape[-2:]
    labels = labels.to(features.device)
    if tuple(labels.shape[-2:]) != (height, width):
        labels = F.interpolate(labels[:, None].double(), size=(height, width), mode="nearest")[:, 0].long()
    labels = labels.long()
    valid = (labels >= 0) & (labels != ignore_index)
    if not valid.any():
        raise ValueError("distance_matching_references: no labelled pixel (all ignored) at the feature size")
    n_ids = int(labels[valid].max()) + 1
    image_index = torch.arange(len(labels), device=labels.device)[:, None, None].expand_as(labels)
    keys = (image_index * n_ids + labels)[valid]
    segments, segment_of_pixel = torch.unique(keys, return_inverse=True)
    pixels = features.permute(0, 2, 3, 1)[valid].float()
    sums = torch.zeros(len(segments), features.shape[1], device=features.device).index_add_(
        0, segment_of_pixel, pixels)
    counts = torch.bincount(segment_of_pixel, minlength=len(segments)).float()
    return sums / counts[:, None], segments % n_ids


@torch.no_grad()
def distance_matching_scores(features: torch.Tensor, references: torch.Tensor, reference_classes: torch.Tensor,
                             k: int = 10, temperature: float = 0.07, n_classes: int | None = None,
                             chunk_size: int = 32_768) -> torch.Tensor:
    """Weighted k-NN votes B×K×h×w of every pixel: Σ over its k nearest references (cosine) of
    ``exp(cos / T)`` for the reference's class. Votes are computed relative to each pixel's best
    similarity, ``exp((cos − cos_max) / T)``, which rescales a pixel's votes and keeps them finite
    without changing its argmax. ``n_classes`` defaults to ``max(reference_classes) + 1``."""
    check_features(features, references.shape[1] if references.ndim == 2 else None)
    if references.ndim != 2 or reference_classes.ndim != 1 or len(references) != len(reference_classes):
        raise ValueError(f"references must be R×C with R class ids, got {tuple(references.shape)} and "
                         f"{tuple(reference_classes.shape)}")
    if len(references) == 0:
        raise ValueError("distance matching needs at least one reference embedding")
    if k < 1 or temperature <= 0:
        raise ValueError(f"k must be positive and temperature > 0, got k={k}, temperature={temperature}")
    n_classes = int(reference_classes.max()) + 1 if n_classes is None else n_classes
    if int(reference_classes.min()) < 0 or int(reference_classes.max()) >= n_classes:
        raise ValueError(f"reference classes must lie in 0..{n_classes - 1}")
    batch, channels, height, width = features.shape
    device = features.device
    keys = F.normalize(references.to(device).float(), dim=1, eps=1e-10)
    classes = reference_classes.to(device).long()
    queries = F.normalize(features.float(), dim=1, eps=1e-10).permute(0, 2, 3, 1).reshape(-1, channels)
    k = min(k, len(keys))
    scores = torch.zeros(len(queries), n_classes, device=device)
    for start in range(0, len(queries), chunk_size):
        similarity, neighbours = (queries[start:start + chunk_size] @ keys.T).topk(k, dim=1)
        votes = torch.exp((similarity - similarity[:, :1]) / temperature)
        scores[start:start + chunk_size].scatter_add_(1, classes[neighbours], votes)
    return scores.reshape(batch, height, width, n_classes).permute(0, 3, 1, 2)


def distance_matching_predict(features: torch.Tensor, references: torch.Tensor, reference_classes: torch.Tensor,
                              k: int = 10, temperature: float = 0.07, size: Size = None,
                              n_classes: int | None = None) -> torch.Tensor:
    """LUSS distance matching: class ids B×H×W of B×C×h×w ``features`` by weighted k-NN over the
    (R×C, R) references of :func:`distance_matching_references` (k = 10, T = 0.07 as the official
    code), predicted at h×w and upsampled to ``size`` (default h×w) with nearest interpolation."""
    scores = distance_matching_scores(features, references, reference_classes, k, temperature, n_classes)
    predictions = scores.argmax(1)
    height, width = output_size(features, size)
    if (height, width) != tuple(predictions.shape[-2:]):
        predictions = F.interpolate(predictions[:, None].float(), size=(height, width), mode="nearest")[:, 0]
    return predictions.long()


def semi_supervised_fit(feature_fn: FeatureFn, dataset: Dataset, n_classes: int, epochs: int = 30,
                        lr: float = 5e-3, batch_size: int = 8, head: nn.Module | None = None,
                        weight_decay: float = 0.0, seed: int = 0,
                        device: str | torch.device | None = None) -> nn.Module:
    """Semi-supervised protocol: train a segmentation head on a frozen backbone with few labelled images.

    Args:
        feature_fn: frozen backbone, ImageNet-normalised B×3×H×W → B×C×h×w (run once per image).
        dataset: the labelled split (ImageNet-S ``train-semi``; ``{"image", "label"}`` samples).
        n_classes: K, 'other' included (ImageNet-S-50: 51); labels outside ``0..K-1`` are ignored.
        head: B×C×h×w → B×K×h×w logits; default a 1×1 convolution (:class:`LinearProbe`).
    Returns:
        The trained head (eval mode), with ``loss_history`` (mean loss per epoch).
    """
    features, labels = extract_features(feature_fn, dataset, batch_size, device)
    if head is None:
        head = LinearProbe(features.shape[1], n_classes, seed=seed)
    history = train_segmentation_head(head, features, labels, epochs=epochs, lr=lr, batch_size=batch_size,
                                      seed=seed, weight_decay=weight_decay, device=device,
                                      desc="segmentation head")
    head.loss_history = history
    return head


@torch.no_grad()
def semi_supervised_predict(feature_fn: FeatureFn, head: nn.Module, images: torch.Tensor,
                            size: Size = None) -> torch.Tensor:
    """Class ids B×H×W of B×3×H×W images in [0, 1]: the head's logits upsampled bilinearly to ``size``
    (default the image size) before the argmax, as the official evaluation does."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be B×3×H×W, got {tuple(images.shape)}")
    device = next(head.parameters()).device
    features = feature_fn(normalize(images.to(device)))
    check_features(features, name="feature_fn output")
    return predict_segmentation(head, features, size if size is not None else tuple(images.shape[-2:]))
