"""SegSort's official test-time procedure on full-size images: sliding windows, several scales, flips.

What ``pyscripts/inference/extract_prototypes.py`` and ``inference_segsort_msc.py`` of jyhjinghwang/SegSort do,
on one image at a time (VOC images differ in size):

- **windows** (:func:`window_starts`): the image is padded below and right to at least ``window × window``
  with the mean colour (0 after normalisation; the official pads the mean-subtracted image with zeros)
  and cut into ``window``-pixel squares whose ends are ``linspace(window, padded, n)`` with
  ``n = ceil((padded - window) / stride) + 1`` (480 and 320 in ``bashscripts/voc12/train_segsort.sh:20-21``).
  Each window's embedding is upsampled bilinearly to the window's size.
- **training prototypes** (:func:`window_embeddings`): the windows' upsampled embeddings are *summed* where
  they overlap (``extract_prototypes.py:218-232``), cropped to the image, then clustered and purified by
  :class:`~.retrieval.SegmentRetrieval` at the image's resolution.
- **test predictions** (:func:`multiscale_scores`): for every scale s in (0.5, 0.75, 1, 1.25, 1.5, 1.75)
  (``inference_segsort_msc.py:126``) the image is resized to ``int(H·s) × int(W·s)``, and with ``flip`` also
  mirrored (``:138-146``); every window is vMF-clustered on its own (5×5 grid, 10 iterations, at the
  window's resolution, ``:176-191``), each segment's prototype gets its kNN *vote counts* (k = 15) and
  every pixel of the segment adds them (``:194-199, 298-305``); the vote maps are cropped to the scaled
  image, resized bilinearly to the original size, mirrored back and **summed over scales and flips**
  (``:307-317``); the prediction is the arg-max class. Votes are combined, not embeddings or logits.

The network runs in eval mode under bf16 autocast on CUDA; clustering and votes are in float32.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import normalize
from .retrieval import segment_images

INFERENCE_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
"""``pyscripts/inference/inference_segsort_msc.py:126`` (with ``--scale_aug``, as all three VOC scripts run it)."""
INFERENCE_FLIP = True
"""``--flip_aug`` in ``bashscripts/voc12/train_segsort.sh:221`` (and ``:127``, ``train_segsort_unsup.sh:99``)."""
INFERENCE_WINDOW = 480
"""``INFERENCE_INPUT_SIZE=480,480`` (``bashscripts/voc12/train_segsort.sh:20``)."""
INFERENCE_STRIDE = 320
"""``INFERENCE_STRIDES=320,320`` (``bashscripts/voc12/train_segsort.sh:21``)."""


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """First indices of the windows along one side of ``size`` pixels (padded to ``window`` when smaller):
    the official ends ``np.linspace(window, padded, n, dtype=int32)``, ``n = ceil((padded - window) / stride) + 1``."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be positive, got {window} and {stride}")
    padded = max(size, window)
    count = math.ceil((padded - window) / stride) + 1
    return [int(end) - window for end in np.linspace(window, padded, count, dtype=np.int32)]


def _windows(net: nn.Module, image: torch.Tensor, window: int, stride: int,
             device: torch.device) -> tuple[list[tuple[int, int]], torch.Tensor, tuple[int, int]]:
    """The windows' corners, their embeddings N×D×window×window (bilinearly upsampled, float32, on
    ``device``) and the padded size, for a 3×H×W image in [0, 1]."""
    height, width = image.shape[-2:]
    padded = (max(height, window), max(width, window))
    canvas = F.pad(normalize(image.to(device)), (0, padded[1] - width, 0, padded[0] - height))   # 0 = the mean
    corners = [(top, left) for top in window_starts(height, window, stride)
               for left in window_starts(width, window, stride)]
    crops = torch.stack([canvas[:, top:top + window, left:left + window] for top, left in corners])
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        embeddings = net(crops)
    upsampled = F.interpolate(embeddings.float(), size=(window, window), mode="bilinear", align_corners=False)
    return corners, upsampled, padded


@torch.no_grad()
def window_embeddings(net: nn.Module, image: torch.Tensor, window: int = INFERENCE_WINDOW,
                      stride: int = INFERENCE_STRIDE, device: torch.device | str | None = None) -> torch.Tensor:
    """D×H×W embedding of a 3×H×W image in [0, 1] for the training prototypes: the windows' upsampled
    embeddings summed where they overlap, cropped to the image (not normalised; the clustering and the
    prototypes normalise per pixel). On the CPU."""
    device = torch.device(device) if device is not None else next(net.parameters()).device
    corners, embeddings, padded = _windows(net.eval(), image, window, stride, device)
    total = embeddings.new_zeros(embeddings.shape[1], *padded)
    for (top, left), embedding in zip(corners, embeddings):
        total[:, top:top + window, left:left + window] += embedding
    return total[:, :image.shape[-2], :image.shape[-1]].cpu()


@torch.no_grad()
def window_scores(net: nn.Module, image: torch.Tensor, score_segments: Callable[[torch.Tensor], torch.Tensor],
                  window: int, stride: int, grid: int, iterations: int, device: torch.device) -> torch.Tensor:
    """C×H×W scores of one (scaled, maybe mirrored) 3×H×W image: every window clustered on its own at its
    resolution, each segment's S×D prototypes scored by ``score_segments`` (→ S×C), every pixel adding its
    segment's scores, overlapping windows adding up. Float32 on ``device``."""
    corners, embeddings, padded = _windows(net, image, window, stride, device)
    batch = segment_images(embeddings, None, grid, iterations)
    per_segment = score_segments(batch.prototypes).float().to(batch.ids.device)   # S×C
    per_pixel = per_segment[batch.ids].permute(0, 3, 1, 2)                        # N×C×window×window
    total = per_pixel.new_zeros(per_pixel.shape[1], *padded)
    for (top, left), scores in zip(corners, per_pixel):
        total[:, top:top + window, left:left + window] += scores
    return total[:, :image.shape[-2], :image.shape[-1]]


@torch.no_grad()
def multiscale_scores(net: nn.Module, image: torch.Tensor, score_segments: Callable[[torch.Tensor], torch.Tensor],
                      scales: Sequence[float] = INFERENCE_SCALES, flip: bool = INFERENCE_FLIP,
                      window: int = INFERENCE_WINDOW, stride: int = INFERENCE_STRIDE, grid: int = 5,
                      iterations: int = 10, device: torch.device | str | None = None) -> torch.Tensor:
    """C×H×W summed scores of a 3×H×W image in [0, 1] over ``scales`` and (with ``flip``) mirrored copies,
    each by :func:`window_scores`, resized back to H×W and un-mirrored (see the module docstring).
    The prediction is ``scores.argmax(0)``. On the CPU."""
    if not scales:
        raise ValueError("scales must name at least one scale")
    device = torch.device(device) if device is not None else next(net.parameters()).device
    was_training = net.training
    net.eval()
    height, width = image.shape[-2:]
    total = None
    for scale in scales:
        size = (max(1, int(height * scale)), max(1, int(width * scale)))
        scaled = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        for mirrored in (False, True) if flip else (False,):
            view = scaled.flip(-1) if mirrored else scaled
            scores = window_scores(net, view, score_segments, window, stride, grid, iterations, device)
            scores = F.interpolate(scores[None], size=(height, width), mode="bilinear", align_corners=False)[0]
            scores = scores.flip(-1) if mirrored else scores
            total = scores if total is None else total + scores
    net.train(was_training)
    return total.cpu()
