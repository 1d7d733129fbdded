"""Are feature correspondences semantic? STEGO's first claim, measured (lesson 02).

STEGO (Hamilton et al., ICLR 2022, §3.1) builds on the observation that the cosine similarity of two
self-supervised patch features, F_hwij = f_hw · g_ij / (|f_hw| |g_ij|) (eq. 1), is high when the two
patches show the same kind of thing, within an image and across images. This module measures that:

- ``correlation_maps``: the similarity of one query patch to every patch of some images.
- ``patch_labels``: the majority class of each P×P patch (``-1`` for mixed patches).
- ``same_class_scores`` / ``same_class_separability``: how well the similarity of random patch pairs
  predicts "same class" (precision-recall and AUROC), within images and across images.
- ``kmeans_segmentation``: k-means on the features (K = classes), the first baseline segmentation.
- ``python -m course_lib.models.feature_correspondences``: the toy backbone's quality report (k-means
  mIoU of raw RGB, the same ViT with random weights, and the DINO-trained toy ViT).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from ..evaluation.metrics import UnsupervisedMetrics
from ..evaluation.probes import MiniBatchSphericalKMeans


def correlation_maps(query: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of a C-dim ``query`` feature to every position of ``features`` (N×C×h×w) → N×h×w."""
    if query.dim() != 1 or features.dim() != 4 or features.shape[1] != query.shape[0]:
        raise ValueError(f"query must be C and features N×C×h×w with the same C, got {tuple(query.shape)} "
                         f"and {tuple(features.shape)}")
    return torch.einsum("nchw,c->nhw", F.normalize(features.float(), dim=1), F.normalize(query.float(), dim=0))


def patch_labels(labels: torch.Tensor, grid: tuple[int, int], min_purity: float = 0.75) -> torch.Tensor:
    """Majority class of each cell of an h×w grid over N×H×W labels → N×h×w (``-1``: ignored or mixed).

    A cell is labelled only if its majority class covers at least ``min_purity`` of its pixels.
    """
    n_classes = int(labels.max()) + 1 if labels.numel() and labels.max() >= 0 else 1
    one_hot = F.one_hot(labels.long().clamp(min=-1) + 1, n_classes + 1).permute(0, 3, 1, 2).float()
    shares = F.adaptive_avg_pool2d(one_hot, grid)[:, 1:]  # drop the ignore channel
    purity, majority = shares.max(dim=1)
    return torch.where(purity >= min_purity, majority, torch.full_like(majority, -1))


def raw_pixel_features(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """"Raw pixels" as patch features: each P×P×3 patch flattened, N×3×H×W → N×(3P²)×h×w."""
    n, _, height, width = images.shape
    unfolded = F.unfold(images.float(), kernel_size=patch_size, stride=patch_size)
    return unfolded.reshape(n, -1, height // patch_size, width // patch_size)


def same_class_scores(features: torch.Tensor, labels: torch.Tensor, n_pairs: int = 20_000,
                      within_image: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity and "same class?" for random pairs of labelled patches.

    Args:
        features: N×C×h×w patch features.
        labels: N×h×w patch labels (``-1`` excluded), e.g. from :func:`patch_labels`.
        within_image: pairs from the same image, else from two different images.
    Returns:
        (similarities, same) arrays of length ``n_pairs``.
    """
    n, channels, height, width = features.shape
    if labels.shape != (n, height, width):
        raise ValueError(f"labels {tuple(labels.shape)} must be N×h×w = {(n, height, width)}")
    if not within_image and n < 2:
        raise ValueError("pairs across images need at least two images")
    flat = F.normalize(features.float(), dim=1).permute(0, 2, 3, 1).reshape(n, height * width, channels)
    flat_labels = labels.reshape(n, -1)
    generator = torch.Generator().manual_seed(seed)
    draws = 4 * n_pairs  # oversample, then keep pairs whose two patches are both labelled
    first_image = torch.randint(n, (draws,), generator=generator)
    second_image = first_image if within_image else (
        first_image + torch.randint(1, n, (draws,), generator=generator)) % n
    first_pos = torch.randint(height * width, (draws,), generator=generator)
    second_pos = torch.randint(height * width, (draws,), generator=generator)
    label_a, label_b = flat_labels[first_image, first_pos], flat_labels[second_image, second_pos]
    keep = (label_a >= 0) & (label_b >= 0) & ~((first_image == second_image) & (first_pos == second_pos))
    keep = keep.nonzero()[:n_pairs, 0]
    if len(keep) == 0:
        raise ValueError("no labelled patch pairs: are the labels all -1?")
    similarity = (flat[first_image[keep], first_pos[keep]] * flat[second_image[keep], second_pos[keep]]).sum(-1)
    return similarity.numpy(), (label_a[keep] == label_b[keep]).numpy()


def same_class_separability(features: torch.Tensor, labels: torch.Tensor, n_pairs: int = 20_000,
                            within_image: bool = True, seed: int = 0) -> dict:
    """AUROC, average precision and the precision-recall curve of "cosine similarity predicts same class"."""
    similarity, same = same_class_scores(features, labels, n_pairs, within_image, seed)
    if same.all() or not same.any():
        raise ValueError("every sampled pair has the same answer; AUROC is undefined")
    precision, recall, _ = precision_recall_curve(same, similarity)
    return {"auroc": 100 * float(roc_auc_score(same, similarity)),
            "average_precision": 100 * float(average_precision_score(same, similarity)),
            "positive_rate": 100 * float(same.mean()), "precision": precision, "recall": recall}


def kmeans_segmentation(features: torch.Tensor, labels: torch.Tensor, n_classes: int, seed: int = 0,
                        epochs: int = 20) -> dict:
    """Cosine k-means (K = ``n_classes``) on patch features, cluster scores upsampled to the labels' size,
    Hungarian-matched over the whole set.

    Args:
        features: N×C×h×w. labels: N×H×W (``< 0`` ignored).
    Returns:
        ``UnsupervisedMetrics.compute()`` plus ``"predictions"`` (N×H×W cluster ids) and ``"centres"`` (K×C).
    """
    kmeans = MiniBatchSphericalKMeans(n_classes, epochs=epochs, seed=seed, device="cpu").fit(features.float())
    predictions = kmeans.predict(features.float(), size=tuple(labels.shape[-2:]))
    metrics = UnsupervisedMetrics(n_classes)
    metrics.update(predictions, labels)
    return {**metrics.compute(), "predictions": predictions, "centres": kmeans.cluster_centers_}


def quality_report(n_images: int = 200, size: int = 96, seed: int = 0) -> dict[str, float]:
    """k-means mIoU (K = classes, Hungarian) on toy-world ``scenes`` validation images for raw RGB pixels,
    the toy ViT with random weights, and the DINO-trained toy ViT (``load_backbone("toy_vit")``)."""
    from ..data.toyworld import ToyWorld
    from ..evaluation.baselines import pixel_kmeans_miou
    from .backbones import load_backbone
    from .features import extract_features

    world = ToyWorld("scenes", "val", n_images=n_images, size=size, seed=seed)
    images = torch.stack([world[i]["image"] for i in range(len(world))])
    labels = torch.stack([world[i]["label"] for i in range(len(world))])
    report = {"rgb_kmeans_mIoU": pixel_kmeans_miou(images.permute(0, 2, 3, 1).numpy(), labels.numpy(),
                                                   world.num_classes, seed=seed)["mIoU"]}
    for key, random_init in (("random_vit_kmeans_mIoU", True), ("toy_vit_kmeans_mIoU", False)):
        backbone = load_backbone("toy_vit", random_init=random_init)
        features, _ = extract_features(backbone, world, batch_size=50, device="cpu", desc=key)
        report[key] = kmeans_segmentation(features, labels, world.num_classes, seed=seed)["mIoU"]
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="k-means quality of the toy backbone's patch features.")
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    report = quality_report(args.n_images)
    for key, value in report.items():
        print(f"{key:24s} {value:6.1f}")
    print(f"toy ViT - RGB: {report['toy_vit_kmeans_mIoU'] - report['rgb_kmeans_mIoU']:+.1f} mIoU points; "
          f"toy ViT - random ViT: {report['toy_vit_kmeans_mIoU'] - report['random_vit_kmeans_mIoU']:+.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
