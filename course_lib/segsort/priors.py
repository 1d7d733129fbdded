"""Over-segmentation priors for the unsupervised SegSort loss.

The paper's unsupervised SegSort (Hwang et al., ICCV 2019) takes its positive regions from a
contour-based over-segmentation: HED edges (a supervised edge detector trained on BSDS) turned into
regions with the oriented watershed transform and ultrametric contour map (owt-ucm, Arbeláez et al. 2011),
a Matlab pipeline. That pipeline cannot run here (Matlab, a supervised edge model), so the course uses
**scikit-image superpixels as a substitute**: Felzenszwalb-Huttenlocher graph segmentation (default) or
SLIC. Both are label-free and colour / texture driven, like the owt-ucm regions, but follow weaker edges;
expect noisier regions than the paper's.

Users who have HED-owt-ucm results can load them: :func:`read_segment_png` reads a region-id PNG (the
official code's ``hed`` folder: one single-channel PNG of region ids per image), and
:func:`segments_from_ucm` turns a raw UCM (contour strength in [0, 1]) into regions at a threshold.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from skimage.segmentation import felzenszwalb, slic

from ..config import progress
from .vmf import batch_segment_ids

FELZENSZWALB_DEFAULTS = {"scale": 300.0, "sigma": 1.0, "min_size": 80}
SLIC_DEFAULTS = {"n_segments": 25, "compactness": 20.0, "sigma": 1.0}


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 image, got shape {image.shape}")
    return image


def felzenszwalb_segments(image: np.ndarray, **options) -> np.ndarray:
    """Felzenszwalb-Huttenlocher superpixels of an H×W×3 image in [0, 1] → H×W int64 ids 0..S-1.

    ``options`` override :data:`FELZENSZWALB_DEFAULTS` (``scale``: larger gives larger regions;
    ``sigma``: pre-smoothing; ``min_size``: smallest region in pixels)."""
    return felzenszwalb(_check_image(image), **{**FELZENSZWALB_DEFAULTS, **options}).astype(np.int64)


def slic_segments(image: np.ndarray, **options) -> np.ndarray:
    """SLIC superpixels (k-means in Lab + position) of an H×W×3 image in [0, 1] → H×W int64 ids 0..S-1.

    ``options`` override :data:`SLIC_DEFAULTS` (``n_segments``: about how many; ``compactness``:
    larger gives squarer regions)."""
    segments = slic(_check_image(image), start_label=0, **{**SLIC_DEFAULTS, **options})
    return np.unique(segments, return_inverse=True)[1].reshape(segments.shape).astype(np.int64)


PRIORS: dict[str, Callable[..., np.ndarray]] = {"felzenszwalb": felzenszwalb_segments, "slic": slic_segments}


def superpixels(images: np.ndarray | torch.Tensor, method: str = "felzenszwalb", **options) -> torch.Tensor:
    """Superpixels of a batch: N×H×W×3 (NumPy) or N×3×H×W (torch) images in [0, 1] → N×H×W int64 ids.

    ``method`` is ``"felzenszwalb"`` or ``"slic"``; ``options`` go to that function. scikit-image works
    one image at a time; this is a pre-processing step, computed once per training set.
    """
    if method not in PRIORS:
        raise ValueError(f"unknown superpixel method {method!r}: use one of {', '.join(PRIORS)}")
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected N×3×H×W images, got shape {tuple(images.shape)}")
        images = images.permute(0, 2, 3, 1).cpu().numpy()
    if images.ndim != 4:
        raise ValueError(f"expected N×H×W×3 images, got shape {images.shape}")
    segment = PRIORS[method]
    return torch.from_numpy(np.stack([segment(image, **options)
                                      for image in progress(images, desc=f"{method} superpixels", leave=False)]))


def read_segment_png(path: str | os.PathLike) -> np.ndarray:
    """A region-id PNG (8- or 16-bit, single channel; e.g. a HED-owt-ucm result) → H×W int64 ids 0..S-1."""
    with Image.open(path) as image:
        if image.mode not in ("L", "I", "I;16", "P"):
            raise ValueError(f"{path}: a region-id PNG must be single-channel (mode L, I or I;16), "
                             f"got mode {image.mode}")
        ids = np.asarray(image).astype(np.int64)
    return np.unique(ids, return_inverse=True)[1].reshape(ids.shape)


def segments_from_ucm(ucm: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """Regions of an ultrametric contour map: H×W contour strengths in [0, 1] → H×W int64 ids 0..S-1.

    Pixels with strength below ``threshold`` form connected regions (4-connectivity); contour pixels
    join their nearest region, so every pixel gets an id.
    """
    ucm = np.asarray(ucm, dtype=np.float64)
    if ucm.ndim != 2:
        raise ValueError(f"a UCM is an H×W map, got shape {ucm.shape}")
    interior = ucm < threshold
    if not interior.any():
        raise ValueError(f"no pixel of the UCM is below threshold {threshold}: lower the threshold")
    regions, _ = ndimage.label(interior)
    nearest = ndimage.distance_transform_edt(~interior, return_distances=False, return_indices=True)
    return (regions[tuple(nearest)] - 1).astype(np.int64)


def segment_purity(segments: torch.Tensor, labels: torch.Tensor) -> float:
    """Share (0-1) of the labelled pixels whose segment's majority class is their own class.

    ``segments`` and ``labels``: B×H×W per-image ids (segments -1 and labels < 0 ignored). 1.0 means
    no segment straddles a class boundary (a perfect over-segmentation prior for the loss)."""
    if segments.shape != labels.shape:
        raise ValueError(f"segments {tuple(segments.shape)} and labels {tuple(labels.shape)} must match")
    labelled = (segments >= 0) & (labels >= 0)
    ids, _, _ = batch_segment_ids(torch.where(labelled, segments.long(), -1))
    n_classes = int(labels.max()) + 1
    votes = torch.bincount(ids[labelled] * n_classes + labels[labelled].long(),
                           minlength=(int(ids.max()) + 1) * n_classes)
    return (votes.reshape(-1, n_classes).max(1).values.sum() / labelled.sum()).item()
