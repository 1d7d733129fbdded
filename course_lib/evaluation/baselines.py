"""Label-free pixel baselines: k-means on hand-made per-pixel features, Hungarian-matched.

They set the bar the learned features must clear: raw RGB (colour only) and a colour-blind local
texture descriptor. Used by lesson 00 on the toy world and as the "raw RGB" reference of later lessons.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from sklearn.cluster import KMeans

from .metrics import UnsupervisedMetrics


def pixel_kmeans_miou(features: np.ndarray, labels: np.ndarray, n_classes: int,
                      sample_size: int = 40_000, seed: int = 0) -> dict:
    """k-means (K = ``n_classes``) on per-pixel features, all pixels predicted, Hungarian-matched.

    Args:
        features: B×H×W×D per-pixel features.
        labels: B×H×W class ids (< 0 ignored).
        sample_size: pixels drawn at random to fit k-means (all pixels are then predicted).
    Returns:
        ``UnsupervisedMetrics.compute()`` plus ``"predictions"`` (B×H×W cluster ids).
    """
    if features.shape[:-1] != labels.shape:
        raise ValueError(f"features {features.shape} must be labels {labels.shape} × D")
    flat = features.reshape(-1, features.shape[-1])
    rng = np.random.default_rng(seed)
    sample = flat[rng.choice(len(flat), min(sample_size, len(flat)), replace=False)]
    kmeans = KMeans(n_clusters=n_classes, n_init=3, random_state=seed).fit(sample)
    predictions = kmeans.predict(flat).reshape(labels.shape)
    metrics = UnsupervisedMetrics(n_classes)
    metrics.update(torch.from_numpy(predictions), torch.from_numpy(np.asarray(labels)))
    return {**metrics.compute(), "predictions": predictions}


def texture_features(images: np.ndarray) -> np.ndarray:
    """Colour-blind local texture descriptors, B×H×W×3 images in [0, 1] → B×H×W×6 standardised.

    Band energies of the contrast-normalised grey image at three scales (differences of Gaussians)
    and the normalised structure tensor (local orientation).
    """
    def blur(x: np.ndarray, sigma: float) -> np.ndarray:
        return ndimage.gaussian_filter(x, (0, sigma, sigma))

    grey = images @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    mean = blur(grey, 4)
    grey = (grey - mean) / np.sqrt(np.maximum(blur(grey**2, 4) - mean**2, 1e-4))
    bands = [np.log1p(blur((blur(grey, s / 2) - blur(grey, s)) ** 2, 4)) for s in (1.0, 2.0, 4.0)]
    gy, gx = ndimage.sobel(grey, 1), ndimage.sobel(grey, 2)
    jxx, jyy, jxy = blur(gx * gx, 3), blur(gy * gy, 3), blur(gx * gy, 3)
    orientation = [j / (jxx + jyy + 1e-3) for j in (jxx, jyy, jxy)]
    features = np.stack(bands + orientation, -1)
    flat = features.reshape(-1, features.shape[-1])
    return ((features - flat.mean(0)) / flat.std(0)).astype(np.float32)


def noisy_oracle(labels: np.ndarray, n_classes: int, noise: float = 0.3, block: int = 8,
                 permute: bool = True, fixed_ids: int = 0, seed: int = 0) -> np.ndarray:
    """The ground truth, corrupted blockwise and with its ids shuffled: a controllable "method".

    A fraction ``noise`` of the ``block``×``block`` tiles of each B×H×W label map gets a random class
    id (ignore pixels, < 0, become random ids too, as a real prediction has no ignore); with
    ``permute`` the ids are then relabelled by a random permutation, as an unsupervised method's
    cluster ids would be; the first ``fixed_ids`` ids keep their meaning (``fixed_ids=1`` keeps
    ImageNet-S's 'other' = 0, which a LUSS method predicts itself). Returns B×H×W int64 predictions
    in ``0..n_classes-1``.
    """
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be B×H×W, got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    batch, height, width = labels.shape
    tiles = (batch, -(-height // block), -(-width // block))
    corrupt = np.kron(rng.random(tiles) < noise, np.ones((1, block, block), bool))[:, :height, :width]
    random_ids = np.kron(rng.integers(0, n_classes, tiles), np.ones((1, block, block), np.int64))[:, :height, :width]
    predictions = np.where(corrupt | (labels < 0), random_ids, labels).astype(np.int64)
    if not permute:
        return predictions
    relabel = np.concatenate([np.arange(fixed_ids), fixed_ids + rng.permutation(n_classes - fixed_ids)])
    return relabel[predictions]
