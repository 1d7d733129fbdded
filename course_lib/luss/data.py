"""Image sets for the PASS steps: in-memory toy images, batches at a fixed short side, pseudo-labels.

Every dataset yields the course's sample dicts (``"image"`` 3×H×W float in [0, 1], ``"label"``,
``"meta"`` with ``"name"``); an ImageNet-S folder (:class:`course_lib.data.ImageNetS`) names its images
``<wnid>/<stem>``, which is also where their label PNGs go.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..config import progress
from ..data.label_png import read_imagenet_s_png
from ..data.transforms import normalize


class InMemoryImages(Dataset):
    """A dataset rendered (or read) once into an N×3×H×W uint8 tensor: ``"image"`` and the original
    ``"label"`` / ``"meta"`` of every sample are kept (labels are only used for evaluation)."""

    def __init__(self, dataset: Dataset, desc: str = "loading images"):
        samples = [dataset[i] for i in progress(range(len(dataset)), desc=desc)]
        self.images = torch.stack([(s["image"] * 255).round().to(torch.uint8) for s in samples])
        self.labels = torch.stack([s["label"] for s in samples])
        self.meta = [s["meta"] for s in samples]
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index].float() / 255, "label": self.labels[index], "meta": self.meta[index]}


def resize_short_side(images: torch.Tensor, short_side: int | None) -> torch.Tensor:
    """Resize B×3×H×W (or 3×H×W) so that the short side is ``short_side`` (None: unchanged)."""
    if short_side is None:
        return images
    height, width = images.shape[-2:]
    scale = short_side / min(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if size == (height, width):
        return images
    batched = images if images.ndim == 4 else images[None]
    resized = F.interpolate(batched, size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized if images.ndim == 4 else resized[0]


def center_crop(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """The central size×size window of B×3×H×W images (None: unchanged)."""
    if size is None:
        return images
    height, width = images.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top:top + size, left:left + size]


def image_batches(dataset: Dataset, batch_size: int, short_side: int | None = None, crop: int | None = None,
                  desc: str = "images") -> Iterator[tuple[torch.Tensor, list[dict], list[tuple[int, int]]]]:
    """Consecutive batches of ``dataset``: normalised B×3×h×w images resized to ``short_side`` (and
    centre-cropped to ``crop``), their ``meta`` and original (H, W). Images of different original sizes
    never share a batch (a batch ends where the size changes)."""
    batch, metas, sizes = [], [], []
    for index in progress(range(len(dataset)), desc=desc):
        sample = dataset[index]
        image = center_crop(resize_short_side(sample["image"], short_side), crop)
        size = tuple(sample["image"].shape[-2:])
        if batch and (size != sizes[0] or image.shape != batch[0].shape or len(batch) == batch_size):
            yield normalize(torch.stack(batch)), metas, sizes
            batch, metas, sizes = [], [], []
        batch.append(image)
        metas.append(sample["meta"])
        sizes.append(size)
    if batch:
        yield normalize(torch.stack(batch)), metas, sizes


def sample_name(meta: dict) -> str:
    """The file stem of a sample, ``<wnid>/<stem>`` for ImageNet-S, as written in label folders."""
    return str(meta["name"])


class PseudoLabelDataset(Dataset):
    """Images of ``dataset`` with pseudo-labels as their ``"label"``: from an N×H×W tensor ``labels`` or
    from ImageNet-S PNGs ``label_dir/<name>.png`` (0 'other', 1..K)."""

    def __init__(self, dataset: Dataset, labels: torch.Tensor | None = None, label_dir: str | Path | None = None):
        if (labels is None) == (label_dir is None):
            raise ValueError("pass either labels (a tensor) or label_dir (a folder of PNGs)")
        if labels is not None and len(labels) != len(dataset):
            raise ValueError(f"{len(labels)} label maps for {len(dataset)} images")
        self.dataset, self.labels = dataset, labels
        self.label_dir = None if label_dir is None else Path(label_dir)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        if self.labels is not None:
            label = self.labels[index]
        else:
            path = self.label_dir / f"{sample_name(sample['meta'])}.png"
            if not path.is_file():
                raise FileNotFoundError(f"pseudo-label {path} is missing; run the 'labels' step first")
            label = torch.from_numpy(read_imagenet_s_png(path).astype(np.int64))
        if tuple(label.shape) != tuple(sample["image"].shape[-2:]):
            raise ValueError(f"pseudo-label of {sample_name(sample['meta'])} is {tuple(label.shape)}, "
                             f"its image {tuple(sample['image'].shape[-2:])}")
        return {"image": sample["image"], "label": label, "meta": sample["meta"]}
