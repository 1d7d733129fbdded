"""SegSort inference: segments by vMF clustering, labels by nearest-neighbour segment retrieval.

At test time (Hwang et al., ICCV 2019) each image's pixel embeddings are clustered into segments
(:func:`~.vmf.vmf_cluster`: 5×5 grid, 10 iterations) and every segment's prototype retrieves the k = 15
most similar training prototypes (cosine); the segment takes the class with most votes. The training
prototypes are extracted the same way and *purified* (the official ``find_majority_label_index``): each
training segment gets its majority ground-truth class and its prototype is recomputed from the pixels of
that class only.

:class:`SegmentRetrieval` is that protocol (it uses the training labels, like a kNN probe).
:class:`LabelFreeSegments` is the label-free variant the course adds to compare SegSort with STEGO and
PASS under one protocol: k-means (spherical, K = number of classes) on the training prototypes, each
test segment takes its nearest centre, and the cluster ids are matched to classes with the Hungarian
algorithm (:class:`course_lib.evaluation.UnsupervisedMetrics`), as STEGO's cluster probe.

The official inference upsamples the embeddings bilinearly to the input resolution before clustering
(``size`` = the label size here); clustering at the embedding resolution and resizing the ids
(:func:`resize_ids`) is much cheaper and scored within 0.2 mIoU of it in a toy-world check. All steps run
on batches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..evaluation.probes import MiniBatchSphericalKMeans
from .vmf import EPS, batch_segment_ids, segment_prototypes, vmf_cluster

K_NEAREST = 15


@dataclass
class SegmentBatch:
    """Segments of a batch of B images.

    ``segments``: B×H×W per-image vMF ids; ``ids``: B×H×W batch-wide ids 0..S-1 (-1 ignored);
    ``prototypes``: S×D; ``image_index``: S (the image of each segment, within the batch);
    ``local_id``: S (its id in ``segments``)."""

    segments: torch.Tensor
    ids: torch.Tensor
    prototypes: torch.Tensor
    image_index: torch.Tensor
    local_id: torch.Tensor


def _at_size(embeddings: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None or tuple(size) == tuple(embeddings.shape[-2:]):
        return embeddings
    upsampled = F.interpolate(embeddings, size=tuple(size), mode="bilinear", align_corners=False)
    return F.normalize(upsampled, dim=1, eps=EPS)


def segment_images(embeddings: torch.Tensor, size: tuple[int, int] | None = None, grid: int = 5,
                   iterations: int = 10, valid: torch.Tensor | None = None) -> SegmentBatch:
    """vMF-cluster B×D×h×w embeddings (upsampled to ``size`` first) and compute the segments' prototypes."""
    embeddings = _at_size(embeddings, size)
    segments = vmf_cluster(embeddings, grid, iterations, valid=valid)
    ids, image_index, local_id = batch_segment_ids(segments)
    return SegmentBatch(segments, ids, segment_prototypes(embeddings, ids, len(image_index)), image_index, local_id)


def resize_ids(ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of B×H×W integer maps (labels, segment or class ids below 2²⁴) to ``size``."""
    if tuple(ids.shape[-2:]) == tuple(size):
        return ids
    return F.interpolate(ids[:, None].float(), size=tuple(size), mode="nearest-exact")[:, 0].to(ids.dtype)


def purified_prototypes(embeddings: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor,
                        n_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Majority class of every segment and its prototype from the pixels of that class only.

    Args:
        embeddings: B×D×H×W; ids: B×H×W batch-wide segment ids (-1 ignored); labels: B×H×W classes
            (-1 or ≥ ``n_classes`` ignored).

    Returns:
        prototypes P×D, classes P and segment ids P (into ``ids``) of the segments with a labelled pixel.
    """
    labelled = (ids >= 0) & (labels >= 0) & (labels < n_classes)
    if not labelled.any():
        raise ValueError("no segment has a labelled pixel: cannot extract training prototypes")
    n_segments = int(ids.max()) + 1
    votes = torch.bincount(ids[labelled] * n_classes + labels[labelled], minlength=n_segments * n_classes)
    votes = votes.reshape(n_segments, n_classes)
    majority = votes.argmax(1)
    pure = torch.where(labelled & (labels == majority[ids.clamp(min=0)]), ids, -1)
    kept = torch.nonzero(votes.sum(1) > 0).flatten()
    return segment_prototypes(embeddings, pure, n_segments)[kept], majority[kept], kept


def nearest_prototypes(queries: torch.Tensor, bank: torch.Tensor, k: int = K_NEAREST,
                       chunk_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and indices (Q×k each, most similar first) of the k nearest bank prototypes."""
    if k < 1 or k > len(bank):
        raise ValueError(f"k must be in 1..{len(bank)} (the bank's size), got {k}")
    bank = F.normalize(bank, dim=1, eps=EPS)
    results = [(F.normalize(chunk, dim=1, eps=EPS) @ bank.T).topk(k, dim=1)
               for chunk in queries.split(chunk_size)]
    return torch.cat([r.values for r in results]), torch.cat([r.indices for r in results])


def knn_votes(queries: torch.Tensor, bank: torch.Tensor, bank_classes: torch.Tensor, n_classes: int,
              k: int = K_NEAREST) -> torch.Tensor:
    """Q×C votes: how many of each Q×D query prototype's k nearest bank prototypes have class c (each row
    sums to k; the official multi-scale inference adds these counts per pixel,
    ``pyscripts/inference/inference_segsort_msc.py:194-199, 303-305``)."""
    _, neighbours = nearest_prototypes(queries, bank, k)
    return F.one_hot(bank_classes[neighbours], n_classes).sum(1)


def knn_vote(queries: torch.Tensor, bank: torch.Tensor, bank_classes: torch.Tensor, n_classes: int,
             k: int = K_NEAREST) -> torch.Tensor:
    """Class of each Q×D query prototype by majority vote of its k nearest bank prototypes (ties → the
    smaller class id). Returns Q int64."""
    return knn_votes(queries, bank, bank_classes, n_classes, k).argmax(1)


class SegmentRetrieval:
    """SegSort's kNN inference over purified training prototypes (see the module docstring).

    Args:
        n_classes: number of classes; k: neighbours (15); grid, iterations: vMF clustering (5, 10);
        batch_size: images clustered at once.

    :meth:`add` extends the bank with training images (call it batch after batch on a large set),
    :meth:`fit` starts a new bank. The bank: ``bank`` (P×D prototypes), ``bank_classes`` (P),
    ``bank_image`` (P, the index of the training image, counted over all added images) and
    ``bank_local_id`` (P, the segment's id in :func:`segment_images` of that image).
    """

    def __init__(self, n_classes: int, k: int = K_NEAREST, grid: int = 5, iterations: int = 10, batch_size: int = 32):
        if n_classes < 1:
            raise ValueError(f"n_classes must be positive, got {n_classes}")
        self.n_classes, self.k, self.grid, self.iterations, self.batch_size = n_classes, k, grid, iterations, batch_size
        self.reset()

    def reset(self) -> None:
        """Empty the bank."""
        self.bank, self.bank_classes = torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        self.bank_image, self.bank_local_id = torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        self.n_images = 0

    def add(self, embeddings: torch.Tensor, labels: torch.Tensor) -> "SegmentRetrieval":
        """Add the purified prototypes of N training images: embeddings N×D×h×w, labels N×H×W
        (clustered at the label resolution, ignored pixels left out)."""
        if len(embeddings) != len(labels):
            raise ValueError(f"{len(embeddings)} embeddings but {len(labels)} label maps")
        labels = labels.long()
        labelled = torch.nonzero(((labels >= 0) & (labels < self.n_classes)).flatten(1).any(1)).flatten()
        banks, classes, images, local_ids = [self.bank.reshape(-1, embeddings.shape[1])], [self.bank_classes], \
            [self.bank_image], [self.bank_local_id]
        for chunk in labelled.split(self.batch_size):          # images without a labelled pixel are skipped
            upsampled = _at_size(embeddings[chunk], labels.shape[-2:])
            batch = segment_images(upsampled, None, self.grid, self.iterations, valid=labels[chunk] >= 0)
            prototypes, majority, kept = purified_prototypes(upsampled, batch.ids, labels[chunk], self.n_classes)
            banks.append(prototypes)
            classes.append(majority)
            images.append(chunk[batch.image_index[kept]] + self.n_images)
            local_ids.append(batch.local_id[kept])
        self.bank, self.bank_classes = torch.cat(banks), torch.cat(classes)
        self.bank_image, self.bank_local_id = torch.cat(images), torch.cat(local_ids)
        self.n_images += len(embeddings)
        return self

    def fit(self, embeddings: torch.Tensor, labels: torch.Tensor) -> "SegmentRetrieval":
        """A new bank from N training images (see :meth:`add`)."""
        self.reset()
        return self.add(embeddings, labels)

    def votes(self, prototypes: torch.Tensor) -> torch.Tensor:
        """S×C kNN votes of the S×D test prototypes over the bank (:func:`knn_votes`)."""
        if len(self.bank) == 0:
            raise RuntimeError("the bank is empty: call fit() (or add()) first")
        return knn_votes(prototypes, self.bank, self.bank_classes, self.n_classes, self.k)

    def classify(self, prototypes: torch.Tensor) -> torch.Tensor:
        """Class of each of the S×D test prototypes by the kNN vote over the bank."""
        return self.votes(prototypes).argmax(1)

    def predict(self, embeddings: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Class ids N×H×W for N×D×h×w embeddings (clustered at ``size``, default h×w)."""
        predictions = []
        for start in range(0, len(embeddings), self.batch_size):
            batch = segment_images(embeddings[start:start + self.batch_size], size, self.grid, self.iterations)
            predictions.append(self.classify(batch.prototypes)[batch.ids])
        return torch.cat(predictions)


class LabelFreeSegments:
    """Label-free SegSort: spherical k-means on training segment prototypes, test segments → nearest centre.

    The predictions are cluster ids; match them to classes with ``UnsupervisedMetrics(n_clusters)``.
    """

    def __init__(self, n_clusters: int, grid: int = 5, iterations: int = 10, batch_size: int = 32, seed: int = 0):
        self.n_clusters, self.grid, self.iterations, self.batch_size = n_clusters, grid, iterations, batch_size
        self.kmeans = MiniBatchSphericalKMeans(n_clusters, batch_size=4096, epochs=20, seed=seed)

    def prototypes(self, embeddings: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Segment prototypes (S×D) of N×D×h×w embeddings, clustered at ``size``."""
        return torch.cat([segment_images(embeddings[start:start + self.batch_size], size, self.grid,
                                         self.iterations).prototypes
                          for start in range(0, len(embeddings), self.batch_size)])

    def fit_prototypes(self, prototypes: torch.Tensor) -> "LabelFreeSegments":
        """Cluster S×D training prototypes (no labels)."""
        self.kmeans.fit(prototypes)
        return self

    def fit(self, embeddings: torch.Tensor, size: tuple[int, int] | None = None) -> "LabelFreeSegments":
        """Cluster the segment prototypes of N×D×h×w training embeddings (no labels)."""
        return self.fit_prototypes(self.prototypes(embeddings, size))

    def assign(self, prototypes: torch.Tensor) -> torch.Tensor:
        """Cluster id of each of the S×D test prototypes (nearest centre by cosine)."""
        return self.kmeans.predict(prototypes)

    def predict(self, embeddings: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Cluster ids N×H×W: each segment takes the cluster of its prototype."""
        predictions = []
        for start in range(0, len(embeddings), self.batch_size):
            batch = segment_images(embeddings[start:start + self.batch_size], size, self.grid, self.iterations)
            predictions.append(self.assign(batch.prototypes)[batch.ids])
        return torch.cat(predictions)
