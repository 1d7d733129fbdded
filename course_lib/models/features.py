"""Dense features of a frozen backbone: batched extraction and an on-disk cache.

STEGO and every evaluation freeze the backbone, so its features are computed once per image and reused:
``extract_features`` runs a backbone over a dataset (no grad; bf16 autocast on CUDA), and ``FeatureCache``
keeps the result on disk as fp16 ``.npy`` files, memory-mapped when read back, keyed by backbone, dataset,
split and resolution.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import cache_dir, get_device, progress
from ..data.transforms import normalize

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def _stack_samples(samples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    sizes = {tuple(sample["image"].shape) for sample in samples}
    if len(sizes) > 1:
        raise ValueError(f"images of different sizes {sorted(sizes)}: resize or crop them to one size first "
                         "(course_lib.data.Resize / CenterCrop)")
    return torch.stack([s["image"] for s in samples]), torch.stack([s["label"] for s in samples])


def feature_function(backbone: nn.Module | FeatureFn) -> FeatureFn:
    """``backbone.patch_features`` for a backbone module, the callable itself otherwise."""
    return backbone.patch_features if hasattr(backbone, "patch_features") else backbone


@torch.no_grad()
def run_backbone(backbone: nn.Module | FeatureFn, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Features of one batch of un-normalised images (B×3×H×W in [0, 1]) → float32 B×C×h×w on ``device``.

    ImageNet-normalises, and on CUDA runs under bf16 autocast (fused attention kernels).
    """
    images = normalize(images.to(device, non_blocking=True))
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        features = feature_function(backbone)(images)
    if features.dim() != 4:
        raise ValueError(f"the backbone must return B×C×h×w features, got shape {tuple(features.shape)}")
    return features.float()


def extract_features(backbone: nn.Module | FeatureFn, dataset: Dataset, batch_size: int = 16,
                     device: str | torch.device | None = None,
                     desc: str = "extracting features") -> tuple[torch.Tensor, torch.Tensor]:
    """Features N×C×h×w (float32, CPU) and labels N×H×W (int64) of a dataset of ``{"image", "label"}``.

    Images (3×H×W in [0, 1], all of one size) are ImageNet-normalised and passed through the frozen
    ``backbone`` (a module with ``patch_features``, or any B×3×H×W → B×C×h×w callable) on ``device``
    (default :func:`course_lib.config.get_device`) in batches, without gradients.
    """
    device = get_device(device) if not isinstance(device, torch.device) else device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_stack_samples)
    features, labels = [], []
    for images, batch_labels in progress(loader, desc=desc, unit="batch"):
        features.append(run_backbone(backbone, images, device).cpu())
        labels.append(batch_labels.long())
    return torch.cat(features), torch.cat(labels)


@dataclass
class FeatureSet:
    """Cached features of one (backbone, dataset, split, resolution): N×C×h×w fp16 and N×H×W labels."""
    features: torch.Tensor
    labels: torch.Tensor
    path: Path

    def __len__(self) -> int:
        return len(self.features)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "x"


class FeatureCache:
    """Disk cache of frozen-backbone features under ``root`` (default ``COURSE_CACHE/features``).

    Layout: ``root/<backbone key>/<dataset>/<split>/<resolution>/{features.npy, labels.npy, meta.json}``;
    features are fp16, labels int16 (class ids < 32768), both read back memory-mapped. ``meta.json`` is
    written last, so a cut-off run is never mistaken for a finished entry.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "features"

    def entry(self, backbone: str, dataset: str, split: str, resolution: int | str) -> Path:
        """The entry's folder (``backbone`` is the cache key, see :meth:`get_or_compute`)."""
        return self.root / _slug(backbone) / _slug(dataset) / _slug(split) / _slug(resolution)

    def load(self, backbone: str, dataset: str, split: str, resolution: int | str) -> FeatureSet | None:
        """The cached entry (memory-mapped), or ``None`` when it is absent or incomplete."""
        folder = self.entry(backbone, dataset, split, resolution)
        if not (folder / "meta.json").exists():
            return None
        features = torch.from_numpy(np.load(folder / "features.npy", mmap_mode="c"))
        labels = torch.from_numpy(np.load(folder / "labels.npy", mmap_mode="c"))
        return FeatureSet(features, labels, folder)

    def save(self, backbone: str, dataset: str, split: str, resolution: int | str,
             features: torch.Tensor, labels: torch.Tensor) -> FeatureSet:
        folder = self.entry(backbone, dataset, split, resolution)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").unlink(missing_ok=True)
        if labels.numel() and (labels.min() < -32768 or labels.max() > 32767):
            raise ValueError("label ids must fit in int16 to be cached")
        for name, array in (("features", features.to(torch.float16).numpy()),
                            ("labels", labels.to(torch.int16).numpy())):
            with open(folder / f"{name}.npy.part", "wb") as f:
                np.save(f, array)
            os.replace(folder / f"{name}.npy.part", folder / f"{name}.npy")
        meta = {"backbone": backbone, "dataset": dataset, "split": split, "resolution": resolution,
                "features_shape": list(features.shape), "labels_shape": list(labels.shape)}
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))
        return self.load(backbone, dataset, split, resolution)

    def get_or_compute(self, backbone_name: str, dataset: Dataset, dataset_name: str, split: str,
                       resolution: int | str, backbone: nn.Module | FeatureFn | None = None,
                       batch_size: int = 16, device: str | torch.device | None = None) -> FeatureSet:
        """Load the entry, or extract it with ``backbone`` (default ``load_backbone(backbone_name)``) and save it.

        Entries are keyed by :func:`~.backbones.backbone_cache_key` (for ``toy_vit``, a hash of its weights)."""
        from .backbones import backbone_cache_key, load_backbone
        if backbone is None and backbone_name == "toy_vit":
            backbone = load_backbone(backbone_name, device=get_device(device))
        key = backbone_cache_key(backbone_name, backbone if isinstance(backbone, nn.Module) else None)
        cached = self.load(key, dataset_name, split, resolution)
        if cached is not None:
            if len(cached) != len(dataset):
                raise ValueError(f"cached features at {cached.path} hold {len(cached)} images but the dataset has "
                                 f"{len(dataset)}: use another dataset name or delete the folder")
            return cached
        if backbone is None:
            backbone = load_backbone(backbone_name, device=get_device(device))
        device = next(backbone.parameters()).device if isinstance(backbone, nn.Module) else get_device(device)
        features, labels = extract_features(backbone, dataset, batch_size, device,
                                            desc=f"{backbone_name} features of {dataset_name}/{split}")
        return self.save(key, dataset_name, split, resolution, features, labels)


def toy_features(backbone_name: str = "toy_vit", kind: str = "scenes", split: str = "val",
                 n_images: int | None = None, size: int = 96, seed: int = 0,
                 cache: FeatureCache | None = None, device: str | torch.device | None = None,
                 version: int = 1) -> FeatureSet:
    """Cached features of a toy-world split (the common case in the lessons); ``version`` is the toy world's
    (:class:`~course_lib.data.toyworld.ToyWorld`), part of the cache key from v2 on (v1 keeps its old key)."""
    from ..data.toyworld import ToyWorld
    world = ToyWorld(kind, split, n_images=n_images, size=size, seed=seed, version=version)
    name = f"toy_{kind}_n{len(world)}_seed{seed}" + ("" if version == 1 else f"_v{version}")
    return (cache or FeatureCache()).get_or_compute(backbone_name, world, name, split, size, device=device)
