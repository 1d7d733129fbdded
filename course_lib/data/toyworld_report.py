"""How photo-like is the toy world? Class co-occurrence and the clustering bars, measured (issue 16).

STEGO's kNN term (Hamilton et al., ICLR 2022, §3.3) pairs each image with its nearest neighbours by
the backbone's global feature, and helps only if neighbours share classes, as in a photo collection
where the neighbours of a street scene are street scenes. This module measures that on a toy world,
together with the two k-means bars that keep the task honest:

- **neighbour Jaccard**: for each image, the Jaccard index |A ∩ B| / |A ∪ B| between its set of
  classes A and that of its nearest neighbour B by the cosine similarity of the backbone's mean
  patch feature (``load_backbone("toy_vit").patch_features``, averaged over the h×w grid), against
  the mean over all pairs of distinct images (a random pair); their ratio is the gain of a kNN pair
  over a random one (issue 16 asks ≥ 2.5× for toy world v2);
- **RGB k-means mIoU**: k-means on raw pixel colours, Hungarian-matched (must stay below 35: colour
  must not decide the class), :func:`course_lib.evaluation.baselines.pixel_kmeans_miou`;
- **backbone k-means mIoU**: cosine k-means on the same patch features,
  :func:`course_lib.models.feature_correspondences.kmeans_segmentation`.

``python -m course_lib.data.toyworld_report`` prints the table for toy world v1 and v2 on the 200
``scenes`` validation images (about a minute on one CPU core).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from .toyworld import VERSIONS, ToyWorld


def class_presence(labels: torch.Tensor | np.ndarray, n_classes: int) -> np.ndarray:
    """N×H×W labels (< 0 ignored) → N×K bool: class k appears in image n."""
    labels = torch.as_tensor(labels).reshape(len(labels), -1)
    counts = torch.zeros(len(labels), n_classes + 1, dtype=torch.int64)
    counts.scatter_add_(1, labels.clamp(min=-1) + 1, torch.ones_like(labels))
    return (counts[:, 1:] > 0).numpy()


def jaccard_matrix(presence: np.ndarray) -> np.ndarray:
    """N×K bool class sets → N×N Jaccard indices |A ∩ B| / |A ∪ B| (1 for two empty sets)."""
    sets = presence.astype(np.float64)
    intersection = sets @ sets.T
    sizes = sets.sum(1)
    union = sizes[:, None] + sizes[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)


def neighbour_jaccard(presence: np.ndarray, embeddings: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Class overlap of each image with its nearest neighbour, against a random pair.

    Args:
        presence: N×K bool class sets (:func:`class_presence`).
        embeddings: N×C global features; neighbours by cosine similarity, the image itself excluded.
    Returns:
        ``nn_jaccard`` (mean over images of the Jaccard with the nearest neighbour), ``random_jaccard``
        (mean over all ordered pairs of distinct images) and their ``ratio``.
    """
    n = len(presence)
    if n < 2 or len(embeddings) != n:
        raise ValueError(f"need at least two images and one embedding per image, got {n} class sets "
                         f"and {len(embeddings)} embeddings")
    unit = torch.nn.functional.normalize(torch.as_tensor(embeddings).double(), dim=1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-float("inf"))
    nearest = similarity.argmax(1).numpy()
    jaccard = jaccard_matrix(presence)
    nn_value = float(jaccard[np.arange(n), nearest].mean())
    random_value = float((jaccard.sum() - np.trace(jaccard)) / (n * (n - 1)))
    return {"nn_jaccard": nn_value, "random_jaccard": random_value, "ratio": nn_value / random_value}


def world_report(version: int, n_images: int = 200, size: int = 96, seed: int = 0) -> dict[str, float]:
    """The measurements of the module docstring on ``ToyWorld("scenes", "val", n_images, size, seed, version)``
    with the shipped toy backbone; also ``render_seconds`` (rendering the images on this machine)."""
    from ..evaluation.baselines import pixel_kmeans_miou
    from ..models.backbones import load_backbone
    from ..models.feature_correspondences import kmeans_segmentation
    from ..models.features import extract_features

    world = ToyWorld("scenes", "val", n_images=n_images, size=size, seed=seed, version=version)
    start = time.perf_counter()
    images, labels = (np.stack(arrays) for arrays in zip(*(world.render(i) for i in range(len(world)))))
    render_seconds = time.perf_counter() - start
    features, _ = extract_features(load_backbone("toy_vit"), world, batch_size=50, device="cpu",
                                   desc=f"toy_vit features, world v{version}")
    report = neighbour_jaccard(class_presence(labels, world.num_classes), features.mean(dim=(2, 3)))
    report["rgb_kmeans_mIoU"] = pixel_kmeans_miou(images, labels, world.num_classes, seed=seed)["mIoU"]
    report["backbone_kmeans_mIoU"] = kmeans_segmentation(features, torch.from_numpy(labels),
                                                         world.num_classes, seed=seed)["mIoU"]
    report["render_seconds"] = render_seconds
    return report


def format_table(reports: dict[int, dict[str, float]]) -> str:
    """Markdown table, one column per world version."""
    rows = [("NN Jaccard (toy_vit mean feature)", "nn_jaccard", "{:.3f}"),
            ("random-pair Jaccard", "random_jaccard", "{:.3f}"),
            ("ratio NN / random", "ratio", "{:.2f}x"),
            ("k-means RGB mIoU", "rgb_kmeans_mIoU", "{:.1f}"),
            ("k-means toy_vit mIoU", "backbone_kmeans_mIoU", "{:.1f}"),
            ("render time (s)", "render_seconds", "{:.2f}")]
    versions = sorted(reports)
    lines = ["| measure | " + " | ".join(f"v{v}" for v in versions) + " |",
             "|---|" + "---|" * len(versions)]
    lines += [f"| {title} | " + " | ".join(fmt.format(reports[v][key]) for v in versions) + " |"
              for title, key, fmt in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Class co-occurrence and k-means bars of toy world v1 and v2 "
                                                 "(scenes, validation split, shipped toy backbone).")
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--versions", type=int, nargs="+", default=list(VERSIONS), choices=VERSIONS)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    reports = {version: world_report(version, args.n_images, args.size, args.seed) for version in args.versions}
    print(format_table(reports))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"v{version}": report for version, report in reports.items()}, f, indent=1)


if __name__ == "__main__":
    main()
