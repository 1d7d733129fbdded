"""Train a SegSort embedding and measure it: ``python -m course_lib.segsort.train --profile toy --out DIR``.

The flags follow the course's CLI convention (:mod:`course_lib.cli`: ``--profile --dataset --out --data-root
--device --threads --seed --max-steps --print-config``); ``--out`` defaults to
``COURSE_CACHE/runs/segsort_<dataset>_<arch>``.

Toy profile (default): the toy world's ``scenes`` (1000 training, 200 validation images, 96 px), the
small :class:`~.network.ToyEmbeddingNet` trained from scratch with the unsupervised segment-sorting loss
on Felzenszwalb superpixels (the substitute for HED-owt-ucm, see :mod:`.priors`), Adam with the poly
schedule, random horizontal flips and, added for the toy world, random grey images (p = 0.5): toy colours
are random per region by design, and without it the embedding tells segments apart by colour more than by
texture (measured, 8 epochs: kNN mIoU 28.1 with grey images, 18.7 without; label-free 10.6 and 10.7).
Full scale (``--profile full``, ``--dataset voc2012``): PASCAL VOC 2012 ``train_aug`` with random scale,
crop and flip, the dilated ResNet-101 with a pyramid-pooling head from ImageNet weights, SGD with the
official poly schedule (lr 2e-3, momentum 0.9, weight decay 5e-4, head ×10); ``--prior hed --hed-dir D``
reads HED-owt-ucm region PNGs (``D/<image id>.png``); ``--supervised`` trains the supervised variant
(vMF clusters split by class, leave-one-out numerator, memory of two batches). The ResNet's ImageNet weights
are read from ``COURSE_CACHE/weights`` (``python data_scripts/get_weights.py --model resnet101``), VOC from
``COURSE_DATA`` (``python data_scripts/get_voc.py``): a missing one stops the run before anything is loaded,
with the command that fetches it. On CUDA the forward pass runs under bf16 autocast; the loss, the vMF
clustering and the metrics are computed in float32.

``COURSE_SMOKE=1`` (the dry run, both profiles): a handful of images, one epoch of at most 2 steps, 64 px
crops (:data:`SMOKE_DEFAULTS`), the same code paths; it proves the plumbing, not the quality.

Several processes: ``torchrun --nproc_per_node N -m course_lib.segsort.train ...`` trains with
DistributedDataParallel (NCCL on GPUs, gloo on CPUs; each process sees its share of every epoch, the loss
uses the prototypes of the process's own batch); rank 0 writes the checkpoints and evaluates.

Every value is checked before any work (one line on stderr naming the flag, exit status 2), and ``--out``
must be a folder this process can write. ``config.json`` is the run's record
(:func:`course_lib.cli.guard_run`): another configuration is refused with the keys that differ
(``--overwrite`` starts afresh), a finished identical run is reported and left untouched; a checkpoint
that has trained longer than asked is never evaluated as this run.

Outputs in ``--out``, each written under a temporary name and renamed when complete: ``config.json`` (the
resolved configuration, what ``--print-config`` prints), ``checkpoint.pt`` (after every epoch; an existing
one is resumed), ``segsort.pt`` (the trained network,
:func:`~.network.load_embedding_net`), ``metrics.json`` (finite numbers only): kNN-retrieval mIoU /
accuracy of the trained and the untrained (same seed, before training) network (``knn_mIoU``,
``knn_untrained_mIoU``, ...; ``mIoU`` repeats ``knn_mIoU``, the paper's protocol, as the run's headline), the
label-free mIoU / accuracy (``label_free_mIoU``, ...), the losses per epoch, timings and the configuration.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .. import cli
from .. import config as course_config
from ..data import ToyWorld, VOC2012, normalize
from ..deviations import Deviation
from ..data.transforms import crop_pair, resize_pair
from ..data.toyworld import MAX_SIZE as TOY_MAX_SIZE, MIN_SIZE as TOY_MIN_SIZE
from ..distributed import init_distributed
from ..evaluation import UnsupervisedMetrics
from ..models.resnet import IMAGENET_WEIGHTS, imagenet_weights_file
from .loss import PrototypeMemory, segment_sort_loss, supervised_segment_sort_loss
from .network import build_embedding_net, embed, load_embedding_net, save_embedding_net
from .priors import PRIORS, read_segment_png, superpixels
from .retrieval import LabelFreeSegments, SegmentRetrieval, resize_ids, segment_images
from .vmf import vmf_cluster


@dataclass
class TrainConfig:
    """Everything that defines a run (saved in the checkpoint and in ``metrics.json``); the toy defaults.
    :data:`FLAG_HELP` says what each field means."""

    profile: str = "toy"
    dataset: str = "toy"
    arch: str = "toy"
    weights: str | None = None
    embedding_dim: int = 32
    supervised: bool = False
    prior: str = "felzenszwalb"
    hed_dir: str | None = None
    concentration: float = 10.0
    grid: int = 5
    kmeans_iterations: int = 10
    n_banks: int = 2
    k_nearest: int = 15
    grayscale: float = 0.5
    epochs: int = 8
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 2e-3
    head_lr_multiplier: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    n_train: int | None = 1000
    n_val: int | None = 200
    size: int = 96
    eval_batch_size: int = 32
    eval_resolution: str = "embedding"
    num_workers: int = 0
    seed: int = 0
    data_root: str | None = None
    max_steps: int | None = None


PROFILE_DEFAULTS = {
    "toy": {},
    "full": dict(dataset="voc2012", arch="resnet101", weights="IMAGENET1K_V1", prior="felzenszwalb", grayscale=0.0,
                 epochs=8, batch_size=8, optimizer="sgd", lr=2e-3, head_lr_multiplier=10.0, weight_decay=5e-4,
                 n_train=None, n_val=None, size=336, eval_batch_size=1, eval_resolution="label", num_workers=4),
}
"""Per-profile defaults that differ from :class:`TrainConfig` (the toy profile is the dataclass default)."""

SMOKE_DEFAULTS = {
    "toy": dict(n_train=16, n_val=8, size=64, epochs=1, batch_size=8, eval_batch_size=8),
    "full": dict(n_train=4, n_val=2, size=64, epochs=1, batch_size=2, num_workers=0),
}
"""Under ``COURSE_SMOKE=1``, per profile, on top of :data:`PROFILE_DEFAULTS` (flags still win); training
steps are capped at 2 whatever the flags say (:func:`course_lib.cli.cap_steps`)."""

RESUMABLE_CHANGES = ("epochs", "max_steps")
"""Fields that may change when a run is resumed (it trains on, longer)."""

COMMON_FLAGS = ("profile", "dataset", "data_root", "seed", "max_steps")
"""Fields whose flags come from :func:`course_lib.cli.add_common_arguments`."""

FLAG_TYPES = {
    "embedding_dim": cli.positive_int, "concentration": cli.positive_float, "grid": cli.positive_int,
    "kmeans_iterations": cli.positive_int, "n_banks": cli.positive_int, "k_nearest": cli.positive_int,
    "grayscale": cli.probability, "epochs": cli.positive_int, "batch_size": cli.positive_int,
    "lr": cli.positive_float, "head_lr_multiplier": cli.positive_float, "momentum": cli.float_range(0, 1, high_open=True),
    "weight_decay": cli.non_negative_float, "n_train": cli.positive_int, "n_val": cli.positive_int,
    "size": cli.positive_int, "eval_batch_size": cli.positive_int, "num_workers": cli.non_negative_int,
}
"""The argparse type (range check) of every numeric field's flag; the other fields are strings checked by name."""
STRING_CHOICES = {"dataset": ("toy", "voc2012"), "eval_resolution": ("embedding", "label"),
                  "prior": (*PRIORS, "hed"), "optimizer": ("adam", "sgd")}
"""The values a string field allows."""
RUN_OUTPUTS = ("checkpoint.pt", "segsort.pt")
"""A run's files besides ``config.json`` and ``metrics.json`` (``--overwrite`` deletes them)."""


FLAG_HELP = {
    "dataset": "toy (ToyWorld scenes) or voc2012 (PASCAL VOC 2012 train_aug / val)",
    "arch": "embedding network: toy, resnet50 or resnet101",
    "weights": "IMAGENET1K_V1 (torchvision's ImageNet ResNet, read from COURSE_CACHE/weights) or none (random)",
    "embedding_dim": "D, the embedding dimension",
    "supervised": "train the supervised variant (ground-truth classes, memory bank) instead of the unsupervised one",
    "prior": "over-segmentation of the unsupervised loss: felzenszwalb, slic or hed (HED-owt-ucm PNGs)",
    "hed_dir": "folder of HED-owt-ucm region PNGs <image id>.png (with --prior hed)",
    "concentration": "kappa, the vMF concentration of the loss",
    "grid": "n: vMF clustering starts from an n×n grid",
    "kmeans_iterations": "vMF clustering iterations",
    "n_banks": "memory banks (previous batches) of the supervised loss",
    "k_nearest": "k of the kNN retrieval",
    "grayscale": "probability of a grey training image (toy world: colour is random, texture decides the class)",
    "epochs": "training epochs",
    "batch_size": "images per batch and process",
    "optimizer": "adam or sgd",
    "lr": "base learning rate (poly decay, power 0.9)",
    "head_lr_multiplier": "learning-rate factor of the last layer",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay",
    "n_train": "training images (default: all)",
    "n_val": "validation images (default: all)",
    "size": "toy image size / full-scale training crop",
    "eval_batch_size": "images per evaluation batch",
    "eval_resolution": "cluster test images at the embedding or the label resolution",
    "num_workers": "data-loader worker processes",
    "seed": "random seed (also the untrained baseline's initialisation)",
    "data_root": "dataset root (default: $COURSE_DATA)",
    "max_steps": "cap on the optimisation steps of the run (the epoch in progress then ends there)",
}


# ----------------------------------------------------------------------------- data
def toy_split(split: str, n_images: int | None, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N×3×H×W float) and labels (N×H×W int64) of a toy ``scenes`` split."""
    world = ToyWorld("scenes", split, n_images=n_images, size=size, seed=seed)
    indices = course_config.progress(range(len(world)), desc=f"toy {split}", leave=False)
    images, labels = zip(*(world.render(i) for i in indices))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(np.stack(labels))


class TensorSegSortDataset(Dataset):
    """In-memory images, labels and prior segments (the toy profile), with random horizontal flips and,
    with probability ``grayscale``, the image turned grey (the segments stay those of the colour image)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, segments: torch.Tensor, grayscale: float = 0.0):
        self.images, self.labels, self.segments, self.grayscale = images, labels, segments, grayscale

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        sample = {"image": self.images[index], "label": self.labels[index], "segments": self.segments[index]}
        if float(torch.rand(())) < 0.5:
            sample = {key: value.flip(-1) for key, value in sample.items()}
        if float(torch.rand(())) < self.grayscale:
            sample["image"] = sample["image"].mean(0, keepdim=True).expand(3, -1, -1)
        return sample


class VOCSegSortDataset(Dataset):
    """PASCAL VOC 2012 samples with their prior segments, randomly scaled, cropped and flipped together.

    The short side is scaled to ``crop · s`` (s uniform in [1, 1.5]), a ``crop × crop`` window is taken at
    random, then flipped with probability 0.5. Superpixels are computed on the crop; HED regions
    (``prior="hed"``) are read from ``hed_dir/<id>.png`` and transformed with the image; ``prior=None``
    (the supervised variant) gives no segments (zeros).
    """

    def __init__(self, base: Dataset, crop: int, prior: str | None, hed_dir: str | None = None):
        if prior == "hed" and hed_dir is None:
            raise ValueError("--prior hed needs --hed-dir, the folder of HED-owt-ucm region PNGs (<image id>.png)")
        self.base, self.crop, self.prior, self.hed_dir = base, crop, prior, hed_dir

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        sample = self.base[index]
        image, label = sample["image"], sample["label"]
        segments = None
        if self.prior == "hed":
            segments = torch.from_numpy(read_segment_png(Path(self.hed_dir) / f"{sample['meta']['name']}.png"))
        height, width = image.shape[1:]
        scale = self.crop * (1 + 0.5 * float(torch.rand(()))) / min(height, width)
        size = (max(self.crop, round(height * scale)), max(self.crop, round(width * scale)))
        image, label = resize_pair(image, label, size)
        top = int(torch.randint(size[0] - self.crop + 1, ()))
        left = int(torch.randint(size[1] - self.crop + 1, ()))
        image, label = crop_pair(image, label, top, left, self.crop, self.crop)
        if self.prior == "hed":
            _, segments = crop_pair(*resize_pair(sample["image"], segments, size), top, left, self.crop, self.crop)
        elif self.prior is None:
            segments = torch.zeros_like(label)
        else:
            segments = torch.from_numpy(PRIORS[self.prior](image.permute(1, 2, 0).numpy()))
        sample = {"image": image, "label": label, "segments": segments}
        if float(torch.rand(())) < 0.5:
            sample = {key: value.flip(-1) for key, value in sample.items()}
        return sample


def training_set(cfg: TrainConfig) -> Dataset:
    """The training dataset of ``cfg`` (images, labels, prior segments)."""
    if cfg.dataset == "toy":
        images, labels = toy_split("train", cfg.n_train, cfg.size, cfg.seed)
        segments = superpixels(images, cfg.prior) if not cfg.supervised else torch.zeros_like(labels)
        return TensorSegSortDataset(images, labels, segments, cfg.grayscale)
    base = VOC2012(cfg.data_root, "train_aug")
    if cfg.n_train is not None:
        base = torch.utils.data.Subset(base, range(min(cfg.n_train, len(base))))
    return VOCSegSortDataset(base, cfg.size, None if cfg.supervised else cfg.prior, cfg.hed_dir)


# ----------------------------------------------------------------------------- training
def make_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (toy) or SGD with momentum (full); the head's learning rate × ``head_lr_multiplier``."""
    head = [p for name, p in net.named_parameters() if name.startswith("head")]
    body = [p for name, p in net.named_parameters() if not name.startswith("head")]
    groups = [{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.lr * cfg.head_lr_multiplier}]
    for group in groups:
        group["initial_lr"] = group["lr"]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use adam or sgd")


def poly_lr(optimizer: torch.optim.Optimizer, step: int, total_steps: int, power: float = 0.9) -> None:
    """The official poly schedule: lr = lr₀ · (1 - step / total)^0.9."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * (1 - step / total_steps) ** power


def batch_loss(net: nn.Module, batch: dict, cfg: TrainConfig, memory: PrototypeMemory,
               device: torch.device) -> torch.Tensor:
    """SegSort loss of one batch: unsupervised on the prior's regions, or supervised on vMF clusters.

    The network runs under bf16 autocast on CUDA; its B×D×h×w embeddings, the vMF clustering and the loss
    are in float32."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        embeddings = net(normalize(batch["image"].to(device, non_blocking=True)))
    embeddings = embeddings.float()
    size = embeddings.shape[-2:]
    if not cfg.supervised:
        return segment_sort_loss(embeddings, resize_ids(batch["segments"].to(device), size), cfg.concentration)
    labels = resize_ids(batch["label"].to(device), size)
    clusters = vmf_cluster(embeddings.detach(), cfg.grid, cfg.kmeans_iterations, valid=labels >= 0)
    return supervised_segment_sort_loss(embeddings, clusters, labels, cfg.concentration, memory)


def _checkpoint_state(net, optimizer, memory, cfg, epoch, losses) -> dict:
    return {"config": asdict(cfg), "epoch": epoch, "losses": losses, "net": getattr(net, "module", net).state_dict(),
            "optimizer": optimizer.state_dict(), "memory": memory.state_dict(), "torch_rng": torch.get_rng_state()}


def _fixed_fields(config: dict) -> dict:
    return {key: value for key, value in config.items() if key not in RESUMABLE_CHANGES}


def train(cfg: TrainConfig, out: Path, device: torch.device, rank: int = 0,
          world_size: int = 1) -> tuple[nn.Module, list[float]]:
    """Train (resuming ``out/checkpoint.pt`` when present); returns the network and the mean loss per epoch."""
    dataset = training_set(cfg)
    net = build_embedding_net(cfg.arch, cfg.embedding_dim, cfg.weights, seed=cfg.seed).to(device)
    optimizer = make_optimizer(net, cfg)
    memory = PrototypeMemory(cfg.n_banks)
    checkpoint_path = out / "checkpoint.pt"
    start_epoch, losses = 0, []
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if _fixed_fields(state["config"]) != _fixed_fields(asdict(cfg)):
            raise course_config.ConfigError(
                f"{checkpoint_path} was written with another configuration; use a new --out or delete the "
                "checkpoint to start again (only --epochs and --max-steps may change on resume)")
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        memory.load_state_dict(state["memory"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, losses = state["epoch"], state["losses"]
        if rank == 0:
            print(f"resuming from {checkpoint_path} after epoch {start_epoch}", flush=True)
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = DistributedSampler(dataset, world_size, rank, shuffle=True, seed=cfg.seed, drop_last=True)
    loader = DataLoader(dataset, cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.num_workers > 0)
    if len(loader) == 0:
        raise course_config.ConfigError(f"{len(dataset)} training images give no batch of {cfg.batch_size} "
                                        f"per process ({world_size} processes): lower --batch-size")
    total_steps = cli.cap_steps(cfg.epochs * len(loader), cfg.max_steps)   # --max-steps, COURSE_SMOKE
    epochs = math.ceil(total_steps / len(loader))
    if start_epoch > epochs:  # its weights have trained longer than this run asks: never evaluate them as this run
        raise course_config.ConfigError(f"{checkpoint_path} has trained {start_epoch} epochs, more than the {epochs} "
                                        "asked for: use a new --out, or --overwrite to start again")
    net.train()
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        running = []
        steps = range(epoch * len(loader), min((epoch + 1) * len(loader), total_steps))
        bar = course_config.progress(zip(steps, loader), total=len(steps), desc=f"epoch {epoch + 1}/{epochs}",
                                     disable=rank != 0 or course_config.progress_disabled())
        for step, batch in bar:
            poly_lr(optimizer, step, total_steps)
            loss = batch_loss(net, batch, cfg, memory, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running.append(loss.item())
            bar.set_postfix(loss=f"{running[-1]:.3f}")
        losses.append(float(np.mean(running)))
        if rank == 0:
            cli.save_atomic(_checkpoint_state(net, optimizer, memory, cfg, epoch + 1, losses), checkpoint_path)
            print(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}", flush=True)
    return getattr(net, "module", net), losses


# ----------------------------------------------------------------------------- evaluation
def evaluation_data(cfg: TrainConfig) -> tuple[Iterable, Iterable, int]:
    """Re-iterable (images N×3×H×W, labels N×H×W) batches of the training images (the retrieval bank and
    the label-free k-means) and of the validation images, and the number of classes. Toy: the first
    ``n_train`` / ``n_val`` images in chunks; VOC: ``train_aug`` / ``val`` at full size, one image a batch."""
    if cfg.dataset == "toy":
        chunk = lambda images, labels: list(zip(images.split(200), labels.split(200)))
        return (chunk(*toy_split("train", cfg.n_train, cfg.size, cfg.seed)),
                chunk(*toy_split("val", cfg.n_val, cfg.size, cfg.seed)), ToyWorld("scenes").num_classes)

    def loader(split: str, limit: int | None) -> DataLoader:
        dataset = VOC2012(cfg.data_root, split)
        if limit is not None:
            dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
        return DataLoader(dataset, batch_size=1, num_workers=cfg.num_workers,
                          collate_fn=lambda samples: (samples[0]["image"][None], samples[0]["label"][None]))

    return loader("train_aug", cfg.n_train), loader("val", cfg.n_val), len(VOC2012.classes)


def _cluster_size(cfg: TrainConfig, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """Where test-time clustering runs: the label (input) resolution, or the embedding's."""
    return tuple(labels.shape[-2:]) if cfg.eval_resolution == "label" else tuple(embeddings.shape[-2:])


@torch.no_grad()
def evaluate_embeddings(train_batches: Iterable, val_batches: Iterable, n_classes: int, cfg: TrainConfig) -> dict:
    """kNN-retrieval (identity mapping) and label-free (Hungarian) mIoU / accuracy in percent.

    ``train_batches`` / ``val_batches``: iterables of (embeddings N×D×h×w, labels N×H×W), each read once: the
    training ones build the retrieval bank and the label-free k-means, the validation ones are scored."""
    retrieval = SegmentRetrieval(n_classes, cfg.k_nearest, cfg.grid, cfg.kmeans_iterations, cfg.eval_batch_size)
    label_free = LabelFreeSegments(n_classes, cfg.grid, cfg.kmeans_iterations, cfg.eval_batch_size, cfg.seed)
    train_prototypes = []
    for embeddings, labels in course_config.progress(train_batches, desc="training prototypes", leave=False):
        size = _cluster_size(cfg, embeddings, labels)
        retrieval.add(embeddings, resize_ids(labels, size))
        train_prototypes.append(label_free.prototypes(embeddings, size))
    label_free.fit_prototypes(torch.cat(train_prototypes))
    knn, clusters = UnsupervisedMetrics(n_classes, hungarian=False), UnsupervisedMetrics(n_classes)
    for embeddings, labels in course_config.progress(val_batches, desc="validation", leave=False):
        at_labels = lambda ids: resize_ids(ids, labels.shape[-2:])
        for start in range(0, len(embeddings), cfg.eval_batch_size):
            window = slice(start, start + cfg.eval_batch_size)
            batch = segment_images(embeddings[window], _cluster_size(cfg, embeddings, labels), cfg.grid,
                                   cfg.kmeans_iterations)
            knn.update(at_labels(retrieval.classify(batch.prototypes)[batch.ids]), labels[window])
            clusters.update(at_labels(label_free.assign(batch.prototypes)[batch.ids]), labels[window])
    return {protocol: {key: metrics.compute()[key] for key in ("mIoU", "accuracy")}
            for protocol, metrics in (("knn", knn), ("label_free", clusters))}


def evaluate_embedding(net: nn.Module, cfg: TrainConfig, train_batches: Iterable, val_batches: Iterable,
                       n_classes: int, device: torch.device) -> dict:
    """:func:`evaluate_embeddings` of one network on (images, labels) batches, embedded batch by batch."""
    embedded = lambda batches: ((embed(net, images, cfg.eval_batch_size, device), labels) for images, labels in batches)
    return evaluate_embeddings(embedded(train_batches), embedded(val_batches), n_classes, cfg)


def evaluate(trained: nn.Module, cfg: TrainConfig, device: torch.device) -> dict:
    """Scores of the trained and of the untrained network (same architecture and seed), as flat keys
    ``knn_mIoU``, ``knn_untrained_mIoU``, ``label_free_mIoU``, ... (and ``_accuracy``)."""
    train_batches, val_batches, n_classes = evaluation_data(cfg)
    untrained = build_embedding_net(cfg.arch, cfg.embedding_dim, cfg.weights, seed=cfg.seed).to(device)
    metrics = {}
    for suffix, net in (("", trained), ("_untrained", untrained)):
        scores = evaluate_embedding(net, cfg, train_batches, val_batches, n_classes, device)
        for protocol, values in scores.items():
            for name, value in values.items():
                metrics[f"{protocol}{suffix}_{name}"] = round(value, 3)
    return metrics


# ----------------------------------------------------------------------------- command line
def resolve_config(profile: str | None = None, **given) -> TrainConfig:
    """The configuration of a run: :class:`TrainConfig`'s defaults, then the profile's
    (:data:`PROFILE_DEFAULTS`; ``profile`` default ``$COURSE_PROFILE``), then under ``COURSE_SMOKE`` the
    smoke sizes (:data:`SMOKE_DEFAULTS`), then the ``given`` fields (``weights="none"``: random)."""
    profile = course_config.profile(profile)
    values = {**PROFILE_DEFAULTS[profile], **(SMOKE_DEFAULTS[profile] if course_config.smoke() else {}),
              **given, "profile": profile}
    if str(values.get("weights")).lower() == "none":
        values["weights"] = None                     # --weights none: random initialisation
    return replace(TrainConfig(), **values)


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """The resolved :class:`TrainConfig` and the parsed flags (``args.out`` defaults to
    ``COURSE_CACHE/runs/segsort_<dataset>_<arch>``)."""
    parser = cli.ArgumentParser(prog="python -m course_lib.segsort.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_arguments(parser, out_required=False, dataset_help=FLAG_HELP["dataset"])
    parser.add_argument("--eval-only", action="store_true", help="skip training: evaluate the network in --out")
    parser.add_argument("--no-eval", action="store_true", help="train only; metrics.json then holds the losses")
    for name, value in asdict(TrainConfig()).items():
        if name in COMMON_FLAGS:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action="store_true", default=None, help=FLAG_HELP[name])
        else:
            parser.add_argument(flag, type=FLAG_TYPES.get(name, str), default=None,
                                help=f"{FLAG_HELP[name]} (toy default: {value})")
    args = parser.parse_args(argv)
    given = {name: getattr(args, name) for name in asdict(TrainConfig())
             if name != "profile" and getattr(args, name, None) is not None}
    if "data_root" in given:
        given["data_root"] = str(given["data_root"])
    cfg = resolve_config(args.profile, **given)
    if cfg.dataset == "toy" and not TOY_MIN_SIZE <= cfg.size <= TOY_MAX_SIZE:
        parser.error(f"--size must be {TOY_MIN_SIZE}..{TOY_MAX_SIZE} for the toy world's images, got {cfg.size}")
    for name, allowed in STRING_CHOICES.items():
        if getattr(cfg, name) not in allowed:
            parser.error(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    if cfg.weights not in (None, IMAGENET_WEIGHTS):
        parser.error(f"--weights must be {IMAGENET_WEIGHTS} or none, got {cfg.weights!r}")
    if args.out is None:
        args.out = course_config.default_run_dir("segsort", cfg.dataset, cfg.arch)
    return cfg, args


def check_inputs(cfg: TrainConfig, train: bool = True, evaluate: bool = True) -> None:
    """Stop at once, before anything is loaded, when a download the run needs is missing: VOC's
    ``train_aug`` (training and the retrieval bank) and ``val`` splits (``DatasetNotFoundError``), the
    ResNet's ImageNet weights (``WeightsNotFoundError``; the untrained baseline starts from them too);
    each message names the ``data_scripts`` command that fetches it. A missing ``--hed-dir`` is a
    ``ConfigError``."""
    if cfg.dataset == "voc2012":
        for split in ("train_aug", "val") if evaluate else ("train_aug",):
            VOC2012(cfg.data_root, split)
    if cfg.weights is not None and cfg.arch != "toy" and (train or evaluate):
        imagenet_weights_file(cfg.arch)
    if train and cfg.prior == "hed" and not cfg.supervised and not (cfg.hed_dir and Path(cfg.hed_dir).is_dir()):
        raise course_config.ConfigError(f"--prior hed needs --hed-dir, a folder of HED-owt-ucm region PNGs "
                                        f"(<image id>.png); got {cfg.hed_dir!r}")


def main(argv: list[str] | None = None) -> dict:
    """Run the CLI (see the module docstring); returns the metrics written to ``metrics.json`` (with
    ``--print-config``: the resolved configuration, nothing run)."""
    argv = sys.argv[1:] if argv is None else argv
    cfg, args = parse_args(argv)
    cli.apply_common(args)
    resolved = {**asdict(cfg), "out": args.out, "smoke": course_config.smoke(), "no_eval": args.no_eval}
    if args.print_config:
        cli.print_config(resolved)
        return resolved
    check_inputs(cfg, train=not args.eval_only, evaluate=not args.no_eval)
    cli.prepare_out(args.out)  # a file or an unwritable folder stops here, not after training
    if not args.eval_only and (int(os.environ.get("RANK", "0")) == 0 or not args.overwrite):  # process 0 deletes
        finished = cli.guard_run(args.out, resolved, overwrite=args.overwrite, outputs=RUN_OUTPUTS,
                                 ignore=("num_workers",))
        if finished is not None:
            return finished
    context = init_distributed(args.device)
    device, rank, world_size = context.device, context.rank, context.world_size
    course_config.seed_everything(cfg.seed + rank)
    start = time.perf_counter()
    if args.eval_only:
        net, saved = load_embedding_net(args.out / "segsort.pt", device)
        cfg, losses = replace(cfg, arch=saved["arch"], embedding_dim=saved["embedding_dim"]), []
    else:
        if rank == 0:
            cli.write_json(args.out / "config.json", resolved)
        net, losses = train(cfg, args.out, device, rank, world_size)
    train_seconds = time.perf_counter() - start
    metrics: dict = {}
    if rank == 0:
        if not args.eval_only:
            with cli.replace_when_written(args.out / "segsort.pt") as partial:
                save_embedding_net(net, partial, {"arch": cfg.arch, "embedding_dim": cfg.embedding_dim,
                                                  "train_config": asdict(cfg)})
        start = time.perf_counter()
        metrics = {} if args.no_eval else evaluate(net.eval(), cfg, device)
        if not args.no_eval:
            metrics["mIoU"] = metrics["knn_mIoU"]   # the headline: kNN retrieval, the paper's protocol
        metrics.update(train_seconds=round(train_seconds, 1), eval_seconds=round(time.perf_counter() - start, 1),
                       losses=losses, world_size=world_size, config=asdict(cfg),
                       command=" ".join(["python -m course_lib.segsort.train", *argv]))
        cli.write_json(args.out / "metrics.json", metrics)
        if not args.no_eval:
            print(json.dumps({k: v for k, v in metrics.items() if k.endswith("mIoU")}), flush=True)
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    cli.run_cli(main)


OFFICIAL_DEVIATIONS: tuple[Deviation, ...] = ()
"""Where this method's full preset still differs from the official code (:mod:`course_lib.deviations`)."""
