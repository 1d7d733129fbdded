"""Cluster and probe metrics with the semantics of STEGO's evaluation code.

A dataset-level confusion matrix ``stats[cluster, class]`` is accumulated with one ``bincount``
per batch (any device); :meth:`UnsupervisedMetrics.compute` matches clusters to classes with the
Hungarian algorithm on that matrix (``scipy.optimize.linear_sum_assignment``, maximising agreement)
and reports, in percent, the mean IoU = TP / (TP + FP + FN) over the classes whose IoU is defined
and the pixel accuracy. ``hungarian=False`` is the identity mapping used for linear probes.

Predictions outside ``0..K-1`` are left out of the matrix, as STEGO's code does; those outside every
cluster id (``0..K-1+extra_clusters``) point to a bug in the caller (one valid pixel among them would
score 100), so :meth:`UnsupervisedMetrics.compute` warns once, with their count, while keeping STEGO's
numbers.

Reference: Hamilton et al., "Unsupervised Semantic Segmentation by Distilling Feature
Correspondences" (STEGO, ICLR 2022), evaluation in the official code's ``UnsupervisedMetrics``.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


class UnsupervisedMetrics:
    """Hungarian-matched (or identity) mIoU and accuracy over a whole dataset.

    Args:
        n_classes: number of ground-truth classes ``K``; labels outside ``0..K-1`` are ignored.
        extra_clusters: the predictions have ``K + extra_clusters`` clusters. As in STEGO, only
            predictions in ``0..K-1`` enter the confusion matrix, each class is matched to one
            cluster, and the unmatched clusters are pooled into one extra row that counts as an
            extra class with no true pixels (it can only lower the mIoU).
        hungarian: match clusters to classes; ``False`` uses the identity (linear probes).
    """

    def __init__(self, n_classes: int, extra_clusters: int = 0, hungarian: bool = True):
        if n_classes < 1:
            raise ValueError(f"n_classes must be positive, got {n_classes}")
        if extra_clusters < 0:
            raise ValueError(f"extra_clusters must be >= 0, got {extra_clusters}")
        if extra_clusters and not hungarian:
            raise ValueError("extra_clusters needs hungarian=True (the identity mapping has no extra clusters)")
        self.n_classes = n_classes
        self.extra_clusters = extra_clusters
        self.hungarian = hungarian
        self.reset()

    @property
    def n_clusters(self) -> int:
        return self.n_classes + self.extra_clusters

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.stats = torch.zeros(self.n_clusters, self.n_classes, dtype=torch.int64)
        self.cluster_to_class: torch.Tensor | None = None
        self.n_labelled = 0
        """Pixels with a label in ``0..K-1`` seen so far."""
        self.n_out_of_range = 0
        """Of those, pixels whose prediction lies outside ``0..K-1+extra_clusters`` (not a cluster id)."""
        self._warned = False

    @torch.no_grad()
    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        """Accumulate a batch. ``preds`` and ``labels`` are integer tensors of the same shape
        (e.g. B×H×W); labels < 0 (or ≥ K) are ignored, and so are predictions outside ``0..K-1`` (STEGO's
        semantics; those that are no cluster id at all are counted in :attr:`n_out_of_range`)."""
        preds, labels = torch.as_tensor(preds), torch.as_tensor(labels)
        if preds.shape != labels.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and labels {tuple(labels.shape)} must have the same shape")
        if preds.is_floating_point() or labels.is_floating_point():
            raise TypeError("preds and labels must be integer tensors (cluster / class ids), not scores")
        preds, labels = preds.reshape(-1).long(), labels.reshape(-1).to(preds.device).long()
        labelled = (labels >= 0) & (labels < self.n_classes)
        no_cluster = labelled & ((preds < 0) | (preds >= self.n_clusters))
        self.n_labelled += int(labelled.sum())
        self.n_out_of_range += int(no_cluster.sum())
        keep = labelled & (preds >= 0) & (preds < self.n_classes)
        flat = preds[keep] * self.n_classes + labels[keep]
        counts = torch.bincount(flat, minlength=self.n_clusters * self.n_classes)
        self.stats += counts.reshape(self.n_clusters, self.n_classes).cpu()

    def _matched_histogram(self) -> torch.Tensor:
        """The confusion matrix with rows reordered so that row j is the cluster matched to class j."""
        stats = self.stats
        if not self.hungarian:
            self.cluster_to_class = torch.arange(self.n_classes)
            return stats
        if self.extra_clusters == 0:
            clusters, classes = linear_sum_assignment(stats.numpy(), maximize=True)
            self.cluster_to_class = torch.as_tensor(classes)[np.argsort(clusters)]
            return stats[torch.as_tensor(clusters[np.argsort(classes)])]
        classes_t, clusters_t = linear_sum_assignment(stats.t().numpy(), maximize=True)
        matched = clusters_t[np.argsort(classes_t)]
        unmatched = sorted(set(range(self.n_clusters)) - set(matched.tolist()))
        mapping = torch.full((self.n_clusters,), -1, dtype=torch.long)
        mapping[torch.as_tensor(matched)] = torch.arange(self.n_classes)
        self.cluster_to_class = mapping
        histogram = torch.cat([stats[torch.as_tensor(matched)], stats[unmatched].sum(0, keepdim=True)], 0)
        return torch.cat([histogram, torch.zeros(self.n_classes + 1, 1, dtype=histogram.dtype)], 1)

    def compute(self) -> dict:
        """Returns ``{"mIoU", "accuracy"}`` in percent, ``"iou"`` (per-class, NaN where undefined)
        and ``"assignment"`` (cluster id → class id, -1 for an unmatched cluster)."""
        if self.n_out_of_range and not self._warned:
            self._warned = True
            warnings.warn(f"UnsupervisedMetrics: {self.n_out_of_range} of {self.n_labelled} labelled pixels have "
                          f"predictions outside the cluster ids 0..{self.n_clusters - 1} (n_classes={self.n_classes}, "
                          f"extra_clusters={self.extra_clusters}); they are left out of the scores, as in STEGO's "
                          "evaluation: check the predictions (or n_classes / extra_clusters)",
                          RuntimeWarning, stacklevel=2)
        if self.stats.sum() == 0:
            raise ValueError("UnsupervisedMetrics.compute() called before any valid pixel was accumulated")
        histogram = self._matched_histogram().double()
        tp = histogram.diag()
        fp = histogram.sum(0) - tp
        fn = histogram.sum(1) - tp
        denominator = tp + fp + fn
        iou = torch.where(denominator > 0, tp / denominator.clamp(min=1), torch.full_like(tp, float("nan")))
        defined = ~torch.isnan(iou)
        return {
            "mIoU": 100.0 * iou[defined].mean().item(),
            "accuracy": 100.0 * (tp.sum() / histogram.sum()).item(),
            "iou": (100.0 * iou[: self.n_classes]).tolist(),
            "assignment": self.cluster_to_class.clone(),
        }

    def map_clusters(self, preds: torch.Tensor) -> torch.Tensor:
        """Relabel cluster ids with their matched class ids (after :meth:`compute`); unmatched → -1."""
        if self.cluster_to_class is None:
            raise RuntimeError("call compute() before map_clusters()")
        return self.cluster_to_class.to(preds.device)[preds.long()]
