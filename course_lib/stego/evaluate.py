"""Evaluation as STEGO does it (official ``src/eval_segmentation.py``), on batches of frozen features.

For each batch of images:

1. codes of the image and of its horizontally flipped copy, the latter flipped back, averaged;
2. codes upsampled bilinearly (``align_corners=False``) to the label size;
3. linear probe: ``log_softmax`` of its logits; cluster probe: ``log_softmax(2 · cos(code, centre))``
   (``ClusterLookup(code, alpha=2, log_probs=True)``);
4. optionally the dense CRF (:func:`course_lib.evaluation.dense_crf_batch`, STEGO's parameters) on these
   log-probabilities, then argmax;
5. cluster predictions are scored with Hungarian matching over the whole set, linear predictions with
   the identity (:class:`course_lib.evaluation.UnsupervisedMetrics`).

The official trainer's validation (``src/train_segmentation.py:254-275``, ``validation_step``) is the same
without the flip and without the CRF: ``evaluate_stego(..., crf=False, flip=False)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F

from ..evaluation.crf import dense_crf_batch
from ..evaluation.metrics import UnsupervisedMetrics
from .model import StegoModel

CLUSTER_ALPHA = 2.0
"""The cluster probe's softmax temperature at evaluation (official ``cluster_probe(code, 2, log_probs=True)``)."""


@dataclass
class EvalBatch:
    """One evaluation batch: B×C×h×w features of the images and of their flipped copies, the images as
    B×H×W×3 uint8 (for the CRF; ``None`` when no CRF runs) and B×H×W labels."""

    features: torch.Tensor
    features_flipped: torch.Tensor
    images: torch.Tensor | None
    labels: torch.Tensor


@torch.no_grad()
def flip_averaged_codes(model: StegoModel, features: torch.Tensor, features_flipped: torch.Tensor) -> torch.Tensor:
    """``(S(f) + flip(S(f_flip))) / 2`` with the head in eval mode → B×D×h×w."""
    model.eval()
    return (model.head(features) + model.head(features_flipped).flip(dims=[3])) / 2


def _upsampled(codes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(codes, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def cluster_log_probs(model: StegoModel, codes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The cluster probe's log-probabilities B×K'×H×W of B×D×h×w codes upsampled (bilinear) to ``size`` = (H, W):
    ``log_softmax(α · cos(z, μ_k))`` with α = :data:`CLUSTER_ALPHA` (what needs no labels: segmenting new images)."""
    return F.log_softmax(CLUSTER_ALPHA * model.cluster_probe(_upsampled(codes, size)), dim=1)


@torch.no_grad()
def probe_log_probs(model: StegoModel, codes: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster (:func:`cluster_log_probs`) and linear log-probabilities (B×K'×H×W, B×K×H×W) of codes upsampled
    to ``size``."""
    linear = F.log_softmax(model.linear_probe(_upsampled(codes, size)), dim=1)
    return cluster_log_probs(model, codes, size), linear


@dataclass
class StegoPredictions:
    """Class-id maps N×H×W of one evaluation: ``cluster`` ids are raw cluster ids (map them with the
    metrics' assignment), ``linear`` are class ids; ``*_crf`` after the CRF (absent when it did not run)."""

    cluster: torch.Tensor
    linear: torch.Tensor
    cluster_crf: torch.Tensor | None = None
    linear_crf: torch.Tensor | None = None


def evaluate_stego(model: StegoModel, batches: Iterable[EvalBatch], n_classes: int, crf: bool = True,
                   crf_workers: int | None = None, keep_predictions: bool = False,
                   flip: bool = True) -> tuple[dict, StegoPredictions | None]:
    """STEGO's metrics over a whole set, with and without the CRF; ``flip``: codes averaged with those of
    the flipped images (:func:`flip_averaged_codes`, the official evaluation), else the images' own codes.

    Returns:
        ``metrics`` with ``cluster_mIoU``, ``cluster_accuracy``, ``linear_mIoU``, ``linear_accuracy``
        (after the CRF when ``crf``, else without) and the same keys suffixed ``_no_crf`` / ``_crf``;
        ``cluster_assignment`` (cluster id → class id); and the predictions when ``keep_predictions``.
    """
    device = next(model.parameters()).device
    variants = ["no_crf", "crf"] if crf else ["no_crf"]
    metrics = {(probe, variant): UnsupervisedMetrics(n_classes, model.config.extra_clusters if probe == "cluster" else 0,
                                                     hungarian=probe == "cluster")
               for probe in ("cluster", "linear") for variant in variants}
    kept: dict[str, list[torch.Tensor]] = {}
    for batch in batches:
        features = batch.features.to(device).float()
        if flip:
            codes = flip_averaged_codes(model, features, batch.features_flipped.to(device).float())
        else:
            model.eval()
            with torch.no_grad():
                codes = model.head(features)
        log_probs = dict(zip(("cluster", "linear"), probe_log_probs(model, codes, tuple(batch.labels.shape[-2:]))))
        for probe, scores in log_probs.items():
            predictions = {"no_crf": scores.argmax(1).cpu()}
            if crf:
                predictions["crf"] = dense_crf_batch(batch.images, scores.cpu(), workers=crf_workers).argmax(1)
            for variant, prediction in predictions.items():
                metrics[probe, variant].update(prediction, batch.labels)
                if keep_predictions:
                    key = probe if variant == "no_crf" else f"{probe}_crf"
                    kept.setdefault(key, []).append(prediction)
    results = {}
    for (probe, variant), metric in metrics.items():
        values = metric.compute()
        results[f"{probe}_mIoU_{variant}"] = values["mIoU"]
        results[f"{probe}_accuracy_{variant}"] = values["accuracy"]
        if probe == "cluster" and variant == variants[-1]:
            results["cluster_assignment"] = values["assignment"].tolist()
    final = variants[-1]
    for probe in ("cluster", "linear"):
        results[f"{probe}_mIoU"] = results[f"{probe}_mIoU_{final}"]
        results[f"{probe}_accuracy"] = results[f"{probe}_accuracy_{final}"]
    predictions = StegoPredictions(**{key: torch.cat(value) for key, value in kept.items()}) if keep_predictions else None
    return results, predictions


def feature_batches(features: torch.Tensor, features_flipped: torch.Tensor, images: torch.Tensor,
                    labels: torch.Tensor, batch_size: int = 32) -> Iterable[EvalBatch]:
    """:class:`EvalBatch` es over cached tensors (N×C×h×w features, N×H×W×3 uint8 images, N×H×W labels)."""
    if not len(features) == len(features_flipped) == len(images) == len(labels):
        raise ValueError(f"features, flipped features, images and labels differ in length: {len(features)}, "
                         f"{len(features_flipped)}, {len(images)}, {len(labels)}")
    for start in range(0, len(features), batch_size):
        end = start + batch_size
        yield EvalBatch(features[start:end], features_flipped[start:end], images[start:end], labels[start:end].long())
