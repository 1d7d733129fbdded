"""How much category information a pre-trained backbone holds: probes on the toy world's ``objects``.

The label-free pipeline can only find categories that the features already separate, so pre-training is
judged before pixel attention and clustering (lesson 05 §6) with two probes on the last stage's features
F (B×C×h×w) of toy-world images, pooled per image in two ways:

- **object**: F averaged over the ground-truth object's pixels (the mask area-downsampled to h×w), i.e.
  what the features say about the object itself;
- **image**: F averaged over the whole image (what the no-attention baseline clusters).

For each pooling: the validation accuracy of a logistic-regression probe trained with the categories of
``n_train`` training images (supervised: an upper bound of what the features hold), and the NMI between
the categories and k-means (K = 10) on the L2-normalised pooled features of the ``n_val`` validation
images (label-free, what the pipeline does). Both in percent.

    python -m course_lib.luss.probe WORK/pretrain/checkpoint.pt [more checkpoints] [--random]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score
from torch import nn

from ..data.toyworld import OBJECT_CLASSES, ToyWorld
from ..data.transforms import normalize
from ..models.resnet import build_resnet
from .pretrain import load_pass_model


@torch.no_grad()
def pooled_features(backbone: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 100
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Object-pooled and image-pooled last-stage features (N×C each) of images N×3×H×W in [0, 1] with
    ``objects`` labels N×H×W (0 'other', > 0 the object)."""
    backbone.eval()
    objects, whole = [], []
    for start in range(0, len(images), batch_size):
        features = backbone(normalize(images[start:start + batch_size]))
        mask = F.interpolate((labels[start:start + batch_size] > 0).float()[:, None], size=features.shape[-2:],
                             mode="area")
        objects.append((features * mask).sum(dim=(2, 3)) / mask.sum(dim=(2, 3)).clamp(min=1e-6))
        whole.append(features.mean(dim=(2, 3)))
    return torch.cat(objects).numpy(), torch.cat(whole).numpy()


def _split(split: str, n_images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    world = ToyWorld("objects", split, n_images=n_images, seed=seed)
    samples = [world[i] for i in range(n_images)]
    labels = torch.stack([s["label"] for s in samples])
    return torch.stack([s["image"] for s in samples]), labels, labels.flatten(1).amax(dim=1).numpy()


def category_probe(backbone: nn.Module, n_train: int = 500, n_val: int = 200, seed: int = 0) -> dict[str, float]:
    """``probe_object``, ``probe_image`` (logistic-regression accuracy) and ``nmi_object``, ``nmi_image``
    (k-means NMI) of ``backbone``'s features on the toy world's ``objects``, in percent (module docstring)."""
    train_images, train_labels, train_categories = _split("train", n_train, seed)
    val_images, val_labels, val_categories = _split("val", n_val, seed)
    train_features = pooled_features(backbone, train_images, train_labels)
    val_features = pooled_features(backbone, val_images, val_labels)
    n_categories = len(OBJECT_CLASSES) - 1  # without 'other'
    scores = {}
    for index, pooling in enumerate(("object", "image")):
        train_x, val_x = train_features[index], val_features[index]
        mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
        classifier = LogisticRegression(max_iter=2000).fit((train_x - mean) / std, train_categories)
        scores[f"probe_{pooling}"] = 100 * classifier.score((val_x - mean) / std, val_categories)
        unit = val_x / np.linalg.norm(val_x, axis=1, keepdims=True).clip(min=1e-12)
        clusters = KMeans(n_categories, n_init=5, random_state=seed).fit_predict(unit)
        scores[f"nmi_{pooling}"] = 100 * normalized_mutual_info_score(val_categories, clusters)
    return {key: round(float(value), 1) for key, value in scores.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.luss.probe",
                                     description="Category probes of PASS pre-training checkpoints on the toy world.")
    parser.add_argument("checkpoints", nargs="*", type=Path, help="pre-training checkpoints (pretrain/checkpoint.pt)")
    parser.add_argument("--random", action="store_true", help="also probe the randomly initialised toy_resnet")
    parser.add_argument("--json", type=Path, default=None, help="write the scores here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    backbones = {"random init (toy_resnet)": build_resnet("toy_resnet")} if args.random else {}
    for path in args.checkpoints:
        backbones[str(path)] = load_pass_model(path)[0].backbone
    if not backbones:
        parser.error("give at least one checkpoint or --random")
    results = {name: category_probe(backbone) for name, backbone in backbones.items()}
    for name, scores in results.items():
        print(json.dumps(scores), name, flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
