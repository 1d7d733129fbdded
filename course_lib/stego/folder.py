"""STEGO on a folder of your own, unlabelled images: ``python -m course_lib.stego.train --dataset folder:DIR``.

No labels, so nothing is measured against classes and no checkpoint is selected on validation data: the run
trains for its steps and keeps the last one. What it reports instead (:func:`folder_diagnostics`, on the codes
of the first :data:`DIAGNOSTIC_IMAGES` training images) needs no labels:

- ``code_mean_cosine`` / ``code_cosine_std``: mean and spread of the cosine between codes at random positions
  of different images; a mean near 1 with a small spread is collapse (every patch has one code);
- ``cluster_shares`` (K shares of those patches whose nearest cluster centre is k), ``cluster_entropy``
  (their entropy / log K: 1 = clusters of equal size, near 0 = one cluster takes all) and ``empty_clusters``;
- ``attracted_shares``: per pair kind (self, kNN, random), the share of the backbone correspondences F above
  the shift b, the patch pairs the loss pulls together.

The data (:func:`prepare_folder_data`): every readable ``.jpg/.jpeg/.png`` of DIR
(:func:`course_lib.data.image_folder.folder_images`; unreadable ones are named and skipped), resized (short side,
nearest neighbour as STEGO's loader) and centre-cropped to the preset's resolution; five-crop when the preset
says so (full profile: as STEGO's CocoStuff / Cityscapes training, the crops made on the fly). The kNN table
(``COURSE_CACHE/stego/knn``) and, with cached features, the feature cache are keyed by the backbone and
:func:`~course_lib.data.image_folder.folder_fingerprint` (the folder's path and file list): another folder, or
a file added, removed or replaced, prepares them afresh.

The preset (:func:`folder_config`): the toy profile's :data:`~.configs.TOY_CONFIG` (with ``--backbone``), the full
profile's CocoStuff-27 block of the backbone (:func:`~.configs.stego_config`; DINOv2 reuses the DINO ViT-S/8 or
B/8 block, :func:`~.configs.preset_note`), K = ``--n-clusters`` (27 full, the toy world's 12 toy). The shifts b
(``--shifts``):

- ``official``: the preset's b values (official for DINO ViT-S/8 and B/8 on CocoStuff-27; the toy world's b
  for the toy ViT), default for ``dino_*`` backbones, for which they were tuned;
- ``calibrated`` (default for every other backbone: DINOv2, the toy ViT, ResNets): each b is the quantile of the
  folder's own correspondences of its pair kind that attracts the share ``attracted_shares`` (self, kNN, random)
  of the entries (the toy recipe, :func:`~.diagnostics.calibrate_shifts`; the toy preset's shares 0.2, 0.1,
  0.02), computed at the start of the run on the first :data:`DIAGNOSTIC_IMAGES` training images. Shifts
  tuned for one backbone's correspondence distribution do not carry over to another's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import Subset

from ..config import ConfigError, cache_dir
from ..data import CenterCrop, Compose
from ..data.image_folder import UnlabelledImageFolder, folder_fingerprint, folder_images
from ..data.toyworld import SCENE_CLASSES
from ..distributed import DistContext
from ..models.backbones import backbone_cache_key
from ..models.features import FeatureCache, extract_features
from .configs import TOY_CONFIG, StegoConfig, stego_config
from .correlation import unit
from .data import NearestResize, dataset_features, official_knn_descriptors
from .diagnostics import attracted_shares, calibrate_shifts
from .model import StegoModel
from .pairs import TOP_K, cached_knn_table, global_descriptors, knn_table
from .trainer import CachedPairs, OnlinePairs

FOLDER_PREFIX = "folder:"
SHIFT_CHOICES = ("official", "calibrated")
FULL_N_CLUSTERS = 27
"""``--n-clusters`` default in the full profile (CocoStuff-27's number of classes, the presets' K)."""
TOY_N_CLUSTERS = len(SCENE_CLASSES)
"""``--n-clusters`` default in the toy profile: the toy world's scene classes (12)."""
DIAGNOSTIC_IMAGES = 128
"""Training images whose features calibrate the shifts and whose codes give the label-free diagnostics."""
SELECTION = "last step: no labels, so no validation-based checkpoint selection"


def folder_of(dataset: str | None) -> Path | None:
    """The folder of a ``folder:DIR`` dataset name, ``None`` for any other name; ``ConfigError`` for an empty DIR."""
    if dataset is None or not dataset.startswith(FOLDER_PREFIX):
        return None
    folder = dataset[len(FOLDER_PREFIX):]
    if not folder:
        raise ConfigError("--dataset folder:DIR needs a folder after 'folder:', e.g. --dataset folder:~/photos")
    return Path(folder).expanduser()


def default_shifts(backbone: str) -> str:
    """``official`` for the DINO (v1) backbones the official shifts were tuned on, else ``calibrated``."""
    return "official" if backbone.startswith("dino_") else "calibrated"


def folder_config(toy: bool, backbone: str | None, shifts: str | None = None, **overrides) -> StegoConfig:
    """The preset of a folder run (module docstring): dataset ``"folder"``, the toy or CocoStuff-27 values of
    ``backbone`` (default ``toy_vit`` / ``dino_vits8``), ``attracted_shares`` set for ``shifts="calibrated"``
    (default :func:`default_shifts`) and cleared for ``"official"``, then ``overrides``."""
    base = stego_config("toy" if toy else "cocostuff27", backbone)
    shifts = shifts or default_shifts(base.backbone)
    if shifts not in SHIFT_CHOICES:
        raise ConfigError(f"--shifts must be one of {', '.join(SHIFT_CHOICES)}, got {shifts!r}")
    shares = (base.attracted_shares or TOY_CONFIG.attracted_shares) if shifts == "calibrated" else None
    return replace(base, dataset="folder", attracted_shares=shares, **overrides)


@dataclass
class FolderData:
    """The training pairs of a folder and the features N×C×h×w and kNN table of its first
    :data:`DIAGNOSTIC_IMAGES` training items (calibration and diagnostics)."""

    source: CachedPairs | OnlinePairs
    sample_features: torch.Tensor
    sample_table: torch.Tensor


def list_folder(folder: Path, n_images: int | None = None) -> tuple[list[Path], list[dict], str]:
    """The readable image files of ``folder`` (the first ``n_images`` when given, e.g. under ``COURSE_SMOKE``),
    the skipped ones (``{"file", "reason"}``) and the fingerprint of the files used."""
    files, skipped = folder_images(folder, flag=f"--dataset {FOLDER_PREFIX}")
    files = files[:n_images] if n_images else files
    return files, skipped, folder_fingerprint(files)


def prepare_folder_data(config: StegoConfig, backbone: nn.Module, files: list[Path], fingerprint: str, *,
                        online: bool, official_knn: bool, num_workers: int = 0, batch_size: int = 50,
                        cache: FeatureCache | None = None, context: DistContext | None = None) -> FolderData:
    """The training data of the image ``files`` (:func:`list_folder`; module docstring) at ``config.resolution``,
    five-cropped when ``config.five_crop``: cached features (``online=False``) or images through the backbone
    at every step.

    ``official_knn``: STEGO's kNN descriptors (the featurizer's channel dropout active,
    :func:`~.data.official_knn_descriptors`), else plain spatial means (the toy recipe). One process (the
    folder runs are not distributed). ``ConfigError`` when the items do not fill one batch.
    """
    context = context or DistContext(device=next(backbone.parameters()).device)
    transform = Compose([NearestResize(config.resolution), CenterCrop(config.resolution)])
    dataset = UnlabelledImageFolder(files, transform, five_crop=config.five_crop)
    if len(dataset) < config.batch_size:
        raise ConfigError(f"--dataset {FOLDER_PREFIX}{files[0].parent}: {len(dataset)} training items "
                          f"({len(files)} readable images{', five-cropped' if config.five_crop else ''}) do not fill "
                          f"one batch of {config.batch_size}; add images or lower --batch-size")
    key = backbone_cache_key(config.backbone, backbone)
    name = f"folder_{fingerprint}_n{len(files)}{'_fivecrop' if config.five_crop else ''}_res{config.resolution}"
    knn_path = cache_dir() / "stego" / "knn" / key / (
        f"{name}_dropout{config.dropout}_seed{config.seed}.npy" if official_knn else f"{name}.npy")

    def descriptors(means: torch.Tensor) -> torch.Tensor:
        return official_knn_descriptors(means, config.dropout, config.seed) if official_knn \
            else torch.nn.functional.normalize(means.float(), dim=1, eps=1e-10)

    if online:
        table = cached_knn_table(knn_path, len(dataset), lambda: descriptors(dataset_features(
            backbone, dataset, context.device, batch_size, num_workers, desc="kNN descriptors")))
        source: CachedPairs | OnlinePairs = OnlinePairs(dataset, backbone, table, num_workers)
        sample = Subset(dataset, range(min(DIAGNOSTIC_IMAGES, len(dataset))))
        features, _ = extract_features(backbone, sample, batch_size, context.device, desc="sample features")
        sample_table = knn_table(global_descriptors(features), min(TOP_K, len(features)))
    else:
        cached = (cache or FeatureCache()).get_or_compute(key, dataset, name, "train", config.resolution,
                                                          backbone=backbone, batch_size=batch_size,
                                                          device=context.device)
        table = cached_knn_table(knn_path, len(cached), lambda: descriptors(global_descriptors(cached.features)))
        source = CachedPairs(cached.features, cached.labels, table)
        features, sample_table = cached.features, table
    return FolderData(source, features, sample_table)


def calibrated(config: StegoConfig, data: FolderData) -> StegoConfig:
    """``config`` with its shifts from the folder's own correspondences when it has ``attracted_shares``."""
    return calibrate_shifts(config, data.sample_features, data.sample_table, n_images=DIAGNOSTIC_IMAGES)


def cluster_size_entropy(shares: torch.Tensor | Sequence[float]) -> float:
    """The entropy of the K cluster shares p_k (summing to 1) over log K: H = −Σ_k p_k log p_k / log K, with
    0 · log 0 = 0 for an empty cluster. 1: clusters of equal size; 0: one cluster takes every pixel (also the
    value for K = 1). Normalised by log K, the number of clusters asked for, not by the log of the non-empty
    ones: empty clusters lower it."""
    shares = torch.as_tensor(shares, dtype=torch.float64)
    k = len(shares)
    present = shares[shares > 0]
    return float(-(present * present.log()).sum() / math.log(k)) if k > 1 else 0.0


@torch.no_grad()
def folder_diagnostics(model: StegoModel, features: torch.Tensor, table: torch.Tensor, n_points: int = 2000,
                       seed: int = 0, batch_size: int = 32) -> dict:
    """The label-free diagnostics of the module docstring for N×C×h×w ``features`` (their N×k kNN ``table``).

    Returns ``code_mean_cosine``, ``code_cosine_std`` (over ``n_points`` random code positions, pairs of one
    image included), ``cluster_shares`` (K floats), ``cluster_entropy`` (normalised by log K),
    ``empty_clusters`` and ``attracted_shares`` (``{"self", "knn", "rand"}``).
    """
    model.eval()
    device = next(model.parameters()).device
    codes = torch.cat([model.head(features[start:start + batch_size].to(device).float()).cpu()
                       for start in range(0, len(features), batch_size)])
    k = model.cluster_probe.n_classes
    ids = torch.cat([model.cluster_probe(codes[start:start + batch_size].to(device)).argmax(1).cpu()
                     for start in range(0, len(codes), batch_size)])
    shares = torch.bincount(ids.flatten(), minlength=k).double() / ids.numel()
    entropy = cluster_size_entropy(shares)
    points = unit(codes).permute(0, 2, 3, 1).reshape(-1, codes.shape[1])
    sample = points[torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))[:n_points]]
    cosines = (sample @ sample.T)[~torch.eye(len(sample), dtype=torch.bool)]
    return {"code_mean_cosine": float(cosines.mean()), "code_cosine_std": float(cosines.std()),
            "cluster_shares": shares.tolist(), "cluster_entropy": entropy,
            "empty_clusters": int((shares == 0).sum()),
            "attracted_shares": attracted_shares(model.config, features, table, n_images=DIAGNOSTIC_IMAGES)}
