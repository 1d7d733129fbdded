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
Full scale (``--profile full``, ``--dataset voc2012``): the recipe of ``bashscripts/voc12/*.sh`` of
jyhjinghwang/SegSort (:func:`recipe` lists it; ``--print-config`` shows it). Batch 8 in total (under torchrun
each process takes 8 / N; N must divide it), 336-pixel crops of the image randomly scaled by 0.5-2.0, padded
(mean colour, ignore label) and mirrored as ``seg_models/image_reader.py`` does, the vMF initial grid and the
(y, x) channels built on the original image and carried through the augmentation; the dilated ResNet-101
with the official PSPNet head (:class:`~.network.PSPHead`) from ImageNet weights; SGD with momentum 0.9 and
the poly schedule (power 0.9), the head (``block5``) at ×10 learning rate, weight decay 5e-4 on the
convolution weights only. Unsupervised (default): 10 000 steps on ``train_aug`` at lr 2e-3;
``--prior hed --hed-dir D`` reads HED-owt-ucm region PNGs (``D/<image id>.png``, the paper's prior).
``--supervised``: two stages in one command, 30 000 steps on ``train_aug`` at lr 2e-3, then 30 000 on ``train``
at lr 2e-4 with the head re-initialised (vMF clusters split by class, leave-one-out numerator, two memory
banks of a random 25·B prototypes each); the retrieval bank is then ``train``, as the official second
stage's. Evaluation: the official multi-scale inference (:mod:`.inference`: 480-pixel windows at stride
320, scales 0.5-1.75, flips, kNN votes summed). The ResNet's ImageNet weights
are read from ``COURSE_CACHE/weights`` (``python data_scripts/get_weights.py --model resnet101``), VOC from
``COURSE_DATA`` (``python data_scripts/get_voc.py``): a missing one stops the run before anything is loaded,
with the command that fetches it. On CUDA the forward pass runs under bf16 autocast; the loss, the vMF
clustering and the metrics are computed in float32.

``COURSE_SMOKE=1`` (the dry run, both profiles): a handful of images, one epoch of at most 2 steps, 64 px
crops (:data:`SMOKE_DEFAULTS`), the same code paths; it proves the plumbing, not the quality.

Several processes: ``torchrun --nproc_per_node N -m course_lib.segsort.train ...`` trains with
DistributedDataParallel (NCCL on GPUs, gloo on CPUs; ``--batch-size`` is the total, each process takes
``batch_size / N`` images and sees its share of every epoch; the loss uses the prototypes of the process's
own batch); rank 0 writes the checkpoints and evaluates.

Every value is checked before any work (one line on stderr naming the flag, exit status 2), and ``--out``
must be a folder this process can write. ``config.json`` is the run's record
(:func:`course_lib.cli.guard_run`): another configuration is refused with the keys that differ
(``--overwrite`` starts afresh), a finished identical run is reported and left untouched; a checkpoint
that has trained longer than asked is never evaluated as this run.

Outputs in ``--out``, each written under a temporary name and renamed when complete: ``config.json`` (the
resolved configuration, what ``--print-config`` prints), ``checkpoint.pt`` (after every epoch and at the end
of each stage, with the stage it belongs to; an existing one is resumed, across the stage boundary too),
``segsort.pt`` (the trained network,
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
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .. import cli
from .. import config as course_config
from ..data import ToyWorld, VOC2012, normalize
from ..deviations import Deviation
from ..data.transforms import IMAGENET_MEAN, random_scale_flip_pad_crop
from ..data.toyworld import MAX_SIZE as TOY_MAX_SIZE, MIN_SIZE as TOY_MIN_SIZE, VERSIONS as WORLD_VERSIONS
from ..distributed import init_distributed
from ..evaluation import UnsupervisedMetrics
from ..models.resnet import IMAGENET_WEIGHTS, imagenet_weights_file
from .loss import PrototypeMemory, segment_sort_loss, supervised_segment_sort_loss
from .inference import INFERENCE_FLIP, INFERENCE_SCALES, INFERENCE_STRIDE, INFERENCE_WINDOW, multiscale_scores, \
    window_embeddings
from .network import build_embedding_net, embed, load_embedding_net, save_embedding_net
from .priors import PRIORS, read_segment_png, superpixels
from .retrieval import LabelFreeSegments, SegmentRetrieval, resize_ids, segment_images
from .vmf import grid_segments, vmf_cluster

SCALE_RANGE = (0.5, 2.0)
"""Random scale of the original image (``seg_models/image_reader.py:25-26``, ``--random_scale``)."""
GRID_CELLS_PER_IMAGE = 25
"""``NUM_CLUSTERS=5`` (``bashscripts/voc12/train_segsort.sh:28``): a 5×5 grid; the memory banks hold 25·B
prototypes each (``network/segsort/train_utils.py:80``)."""


@dataclass
class TrainConfig:
    """Everything that defines a run (saved in the checkpoint and in ``metrics.json``); the toy defaults.
    :data:`FLAG_HELP` says what each field means."""

    profile: str = "toy"
    dataset: str = "toy"
    world_kind: str = "scenes"
    world_version: int = 1
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
    steps: int | None = None
    stage2_steps: int = 0
    stage2_lr: float = 2e-4
    memory: str = "batch"
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 2e-3
    head_lr_multiplier: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    decay_weights_only: bool = False
    n_train: int | None = 1000
    n_val: int | None = 200
    size: int = 96
    eval_batch_size: int = 32
    eval_resolution: str = "embedding"
    inference: str = "single"
    eval_window: int | None = None
    eval_stride: int | None = None
    num_workers: int = 0
    seed: int = 0
    data_root: str | None = None
    max_steps: int | None = None


PROFILE_DEFAULTS = {
    "toy": {},
    "full": dict(dataset="voc2012", arch="resnet101", weights="IMAGENET1K_V1", prior="felzenszwalb", grayscale=0.0,
                 steps=10_000, memory="official", batch_size=8, optimizer="sgd", lr=2e-3, head_lr_multiplier=10.0,
                 weight_decay=5e-4, decay_weights_only=True, n_train=None, n_val=None, size=336, eval_batch_size=1,
                 eval_resolution="label", inference="multiscale", eval_window=INFERENCE_WINDOW,
                 eval_stride=INFERENCE_STRIDE, num_workers=4),
}
"""Per-profile defaults that differ from :class:`TrainConfig` (the toy profile is the dataclass default). The
full values are the official ones: ``bashscripts/voc12/train_segsort_unsup.sh:11-17`` (batch 8, crop 336,
weight decay 5e-4, 10 000 steps, lr 2e-3), ``train_segsort.py:50-56, 192-217`` (momentum 0.9, power 0.9,
decay on ``weights`` only, ``block5`` ×10), the inference of ``train_segsort.sh:20-21``."""

SUPERVISED_DEFAULTS = {
    "toy": {},
    "full": dict(steps=30_000, stage2_steps=30_000, stage2_lr=2e-4),
}
"""With ``--supervised``, on top of :data:`PROFILE_DEFAULTS`: the two stages of
``bashscripts/voc12/train_segsort.sh:15-17, 53-78, 146-173`` (30 000 steps on ``train+`` = ``train_aug`` at
lr 2e-3, then 30 000 on ``train`` at lr 2e-4)."""

SMOKE_DEFAULTS = {
    "toy": dict(n_train=16, n_val=8, size=64, epochs=1, batch_size=8, eval_batch_size=8),
    "full": dict(n_train=4, n_val=2, size=64, epochs=1, batch_size=2, num_workers=0, eval_window=64, eval_stride=64),
}
"""Under ``COURSE_SMOKE=1``, per profile, on top of :data:`PROFILE_DEFAULTS` (flags still win); training
steps are capped at 2 whatever the flags say (:func:`course_lib.cli.cap_steps`)."""

RESUMABLE_CHANGES = ("epochs", "steps", "stage2_steps", "max_steps")
"""Fields that may change when a run is resumed (it trains on, longer)."""

COMMON_FLAGS = ("profile", "dataset", "data_root", "seed", "max_steps")
"""Fields whose flags come from :func:`course_lib.cli.add_common_arguments`."""

FLAG_TYPES = {
    "embedding_dim": cli.positive_int, "concentration": cli.positive_float, "grid": cli.positive_int,
    "world_version": cli.positive_int, "kmeans_iterations": cli.positive_int, "n_banks": cli.positive_int,
    "k_nearest": cli.positive_int,
    "grayscale": cli.probability, "epochs": cli.positive_int, "steps": cli.positive_int,
    "stage2_steps": cli.non_negative_int, "stage2_lr": cli.positive_float, "batch_size": cli.positive_int,
    "lr": cli.positive_float, "head_lr_multiplier": cli.positive_float, "momentum": cli.float_range(0, 1, high_open=True),
    "weight_decay": cli.non_negative_float, "n_train": cli.positive_int, "n_val": cli.positive_int,
    "size": cli.positive_int, "eval_batch_size": cli.positive_int, "num_workers": cli.non_negative_int,
    "eval_window": cli.positive_int, "eval_stride": cli.positive_int,
}
"""The argparse type (range check) of every numeric field's flag; the other fields are strings checked by name."""
STRING_CHOICES = {"dataset": ("toy", "voc2012"), "world_kind": ("scenes", "objects"),
                  "eval_resolution": ("embedding", "label"),
                  "prior": (*PRIORS, "hed"), "optimizer": ("adam", "sgd"), "memory": ("batch", "official"),
                  "inference": ("single", "multiscale")}
"""The values a string field allows."""
RUN_OUTPUTS = ("checkpoint.pt", "segsort.pt")
"""A run's files besides ``config.json`` and ``metrics.json`` (``--overwrite`` deletes them)."""


FLAG_HELP = {
    "dataset": "toy (ToyWorld scenes) or voc2012 (PASCAL VOC 2012 train_aug / val)",
    "world_kind": "toy world kind: scenes, or objects (one object on an 'other' background, class 0)",
    "world_version": "toy world version: 1 (the shipped run's) or 2 (themed scenes)",
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
    "epochs": "training epochs (when --steps is not given)",
    "steps": "optimisation steps of the (first) stage (default: --epochs epochs)",
    "stage2_steps": "steps of a second stage on VOC train (0: none; the supervised full recipe: 30000)",
    "stage2_lr": "base learning rate of the second stage",
    "memory": "supervised memory banks: batch (every prototype of a batch, empty start) or official "
              "(a random 25·B per bank, random class-0 start)",
    "batch_size": "images per optimisation step in total (each of N torchrun processes takes batch_size / N)",
    "optimizer": "adam or sgd",
    "lr": "base learning rate (poly decay, power 0.9)",
    "head_lr_multiplier": "learning-rate factor of the last layer",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay",
    "decay_weights_only": "no weight decay on biases and batch-norm parameters (the official L2 on 'weights')",
    "n_train": "training images (default: all)",
    "n_val": "validation images (default: all)",
    "size": "toy image size / full-scale training crop",
    "eval_batch_size": "images per evaluation batch",
    "eval_resolution": "cluster test images at the embedding or the label resolution (single-scale inference)",
    "inference": "single (one pass per image) or multiscale (the official windows, scales 0.5-1.75 and flips)",
    "eval_window": "side of the multi-scale inference's windows (official 480)",
    "eval_stride": "stride of the multi-scale inference's windows (official 320)",
    "num_workers": "data-loader worker processes",
    "seed": "random seed (also the untrained baseline's initialisation)",
    "data_root": "dataset root (default: $COURSE_DATA)",
    "max_steps": "cap on the optimisation steps of each stage (the epoch in progress then ends there)",
}


# ----------------------------------------------------------------------------- data
def toy_split(split: str, n_images: int | None, size: int, seed: int, kind: str = "scenes",
              version: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N×3×H×W float) and labels (N×H×W int64) of a toy split (``ToyWorld(kind, ..., version)``)."""
    world = ToyWorld(kind, split, n_images=n_images, size=size, seed=seed, version=version)
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
    """PASCAL VOC 2012 samples for SegSort, augmented as the official reader does
    (``seg_models/image_reader.py:179-255``, :func:`~course_lib.data.transforms.random_scale_flip_pad_crop`).

    On the *original* image it builds the vMF initial grid (``grid×grid`` cells of ``ceil(H/grid)`` ×
    ``ceil(W/grid)`` pixels, :func:`~.vmf.grid_segments`) and the (y, x) coordinates (y/H, x/W); then image,
    label, grid, coordinates (and HED regions) are scaled together by a factor uniform in
    :data:`SCALE_RANGE` (``int(H·s) × int(W·s)``), mirrored with probability 0.5, padded below and right to
    ``crop`` (the image with the mean colour, the label and the grid with -1, the HED regions with one new
    region, as the official pads them with 255) and randomly cropped to ``crop × crop``. Felzenszwalb / SLIC
    superpixels (``prior``) are computed on the crop; ``prior=None`` (the supervised variant) gives no
    segments (zeros).

    A sample: ``image`` 3×crop×crop in [0, 1], ``label`` crop×crop int64 (-1 ignore), ``segments``
    crop×crop int64, ``grid`` crop×crop int64 (-1 in the padding), ``locations`` 2×crop×crop float32.
    """

    def __init__(self, base: Dataset, crop: int, prior: str | None, hed_dir: str | None = None, grid: int = 5):
        if prior == "hed" and hed_dir is None:
            raise ValueError("--prior hed needs --hed-dir, the folder of HED-owt-ucm region PNGs (<image id>.png)")
        self.base, self.crop, self.prior, self.hed_dir, self.grid = base, crop, prior, hed_dir, grid

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        sample = self.base[index]
        image, label = sample["image"], sample["label"]
        height, width = image.shape[1:]
        y = (torch.arange(height, dtype=torch.float64) / height)[:, None].expand(height, width)
        x = (torch.arange(width, dtype=torch.float64) / width)[None, :].expand(height, width)
        maps = [label.double(), grid_segments(self.grid, height, width).double(), y, x]
        fill = [-1.0, -1.0, -1.0, -1.0]
        if self.prior == "hed":
            regions = torch.from_numpy(read_segment_png(Path(self.hed_dir) / f"{sample['meta']['name']}.png"))
            maps.append(regions.double())
            fill.append(float(regions.max()) + 1)
        image, maps = random_scale_flip_pad_crop(image, torch.stack(maps), self.crop, SCALE_RANGE, IMAGENET_MEAN,
                                                 fill)
        label, grid = maps[0].long(), maps[1].long()
        if self.prior == "hed":
            segments = maps[4].long()
        elif self.prior is None:
            segments = torch.zeros_like(label)
        else:
            segments = torch.from_numpy(PRIORS[self.prior](image.permute(1, 2, 0).numpy()))
        return {"image": image, "label": label, "segments": segments, "grid": grid,
                "locations": maps[2:4].float()}


def training_set(cfg: TrainConfig, split: str | None = None) -> Dataset:
    """The training dataset of ``cfg`` (images, labels, prior segments); ``split``: the VOC split of the stage
    (default ``train_aug``)."""
    if cfg.dataset == "toy":
        images, labels = toy_split("train", cfg.n_train, cfg.size, cfg.seed, cfg.world_kind, cfg.world_version)
        segments = superpixels(images, cfg.prior) if not cfg.supervised else torch.zeros_like(labels)
        return TensorSegSortDataset(images, labels, segments, cfg.grayscale)
    base = VOC2012(cfg.data_root, split or "train_aug")
    if cfg.n_train is not None:
        base = torch.utils.data.Subset(base, range(min(cfg.n_train, len(base))))
    return VOCSegSortDataset(base, cfg.size, None if cfg.supervised else cfg.prior, cfg.hed_dir, cfg.grid)


@dataclass(frozen=True)
class Stage:
    """One training stage: its split, its steps (``None``: ``epochs`` epochs) and its base learning rate."""
    split: str
    steps: int | None
    lr: float


def stages(cfg: TrainConfig) -> list[Stage]:
    """The stages of a run: ``train_aug`` (toy: the toy training set) at ``lr`` for ``steps``, then, when
    ``stage2_steps`` > 0, ``train`` at ``stage2_lr`` (the official second stage,
    ``bashscripts/voc12/train_segsort.sh:146-173``)."""
    first = Stage("train_aug" if cfg.dataset == "voc2012" else "train", cfg.steps, cfg.lr)
    return [first] + ([Stage("train", cfg.stage2_steps, cfg.stage2_lr)] if cfg.stage2_steps else [])


def bank_split(cfg: TrainConfig) -> str:
    """The split whose prototypes the kNN retrieval uses: the last stage's (the official extracts them from
    ``train+`` after stage 1 and the unsupervised run, from ``train`` after stage 2: ``train_segsort.sh:85, 178``)."""
    return stages(cfg)[-1].split


def recipe(cfg: TrainConfig) -> dict:
    """What ``cfg`` trains and how it is measured, in words and numbers (``--print-config`` shows it)."""
    plan = [{"stage": number, "split": stage.split, "lr": stage.lr,
             "steps": stage.steps if stage.steps is not None else f"{cfg.epochs} epochs"}
            for number, stage in enumerate(stages(cfg), 1)]
    if cfg.dataset == "voc2012":
        augmentation = {"scale": list(SCALE_RANGE), "crop": cfg.size, "flip": True, "pad_image": "mean colour",
                        "pad_label": "ignore", "grid_and_yx": "built on the original image, carried along"}
    else:
        augmentation = {"flip": True, "grayscale": cfg.grayscale}
    if cfg.inference == "multiscale":
        inference = {"scales": list(INFERENCE_SCALES), "flip": INFERENCE_FLIP, "window": cfg.eval_window,
                     "stride": cfg.eval_stride, "combine": "sum of the kNN votes"}
    else:
        inference = {"scales": [1.0], "flip": False, "resolution": cfg.eval_resolution}
    memory = ({"banks": cfg.n_banks, "per_bank": f"{GRID_CELLS_PER_IMAGE}·B (B: images per process)",
               "initial": "random unit vectors of class 0"} if cfg.memory == "official"
              else {"banks": cfg.n_banks, "per_bank": "every prototype of the batch", "initial": "empty"})
    return {"stages": plan, "batch_total": cfg.batch_size, "augmentation": augmentation, "inference": inference,
            "memory": memory if cfg.supervised else None, "prototype_bank": bank_split(cfg)}


def per_process_batch(batch_size: int, world_size: int) -> int:
    """``batch_size`` (the total) divided among ``world_size`` processes; a ``ConfigError`` when it does not
    divide (the official batch is 8 images per step in total: ``bashscripts/voc12/train_segsort.sh:11``)."""
    if batch_size % world_size:
        raise course_config.ConfigError(f"--batch-size {batch_size} is the total over all processes and must be "
                                        f"divisible by the {world_size} torchrun processes")
    return batch_size // world_size


# ----------------------------------------------------------------------------- training
def parameter_groups(net: nn.Module, cfg: TrainConfig) -> list[dict]:
    """The optimiser's parameter groups: the body at ``lr`` and the head (the official ``block5``: every
    parameter named ``head.*``) at ``lr × head_lr_multiplier`` (``train_segsort.py:201-217``); with
    ``decay_weights_only`` each split again, weight decay only on the weights of convolutions (tensors of
    2 dimensions or more), none on biases and batch-norm parameters (the official L2 on variables named
    ``weights``, ``train_segsort.py:191-193``). Each group records its ``lr_multiplier``."""
    named = list(net.named_parameters())
    groups = []
    for in_head, multiplier in ((False, 1.0), (True, cfg.head_lr_multiplier)):
        params = [(name, p) for name, p in named if name.startswith("head") == in_head]
        if cfg.decay_weights_only:
            splits = (([p for _, p in params if p.ndim > 1], cfg.weight_decay),
                      ([p for _, p in params if p.ndim <= 1], 0.0))
        else:
            splits = (([p for _, p in params], cfg.weight_decay),)
        groups += [{"params": group, "weight_decay": decay, "lr_multiplier": multiplier,
                    "lr": cfg.lr * multiplier, "initial_lr": cfg.lr * multiplier}
                   for group, decay in splits if group]
    return groups


def make_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (toy) or SGD with momentum (full) over :func:`parameter_groups`."""
    groups = parameter_groups(net, cfg)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=cfg.momentum)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use adam or sgd")


def set_stage_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's poly-schedule start: the stage's base ``lr`` times the group's multiplier."""
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"] = lr * group["lr_multiplier"]


def poly_lr(optimizer: torch.optim.Optimizer, step: int, total_steps: int, power: float = 0.9) -> None:
    """The official poly schedule: lr = lr₀ · (1 - step / total)^0.9."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * (1 - step / total_steps) ** power


def start_second_stage(net: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    """Enter the second stage as the official does: every variable but ``block5`` continues (weights,
    batch-norm statistics, momentum buffers, the memory banks), the head is re-initialised and its momentum
    cleared (``--not_restore_classifier``, ``bashscripts/voc12/train_segsort.sh:171``, ``train_segsort.py:179-182``).
    The re-initialisation uses ``seed``, so every torchrun process draws the same head."""
    net = getattr(net, "module", net)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net.reset_head()
    for parameter in net.head.parameters():
        optimizer.state.pop(parameter, None)


def make_memory(cfg: TrainConfig, batch_per_process: int) -> PrototypeMemory:
    """The supervised loss's memory: ``batch`` (toy) or the official banks of 25·B prototypes."""
    if cfg.memory == "official":
        return PrototypeMemory.official(cfg.n_banks, cfg.grid ** 2 * batch_per_process, cfg.embedding_dim)
    return PrototypeMemory(cfg.n_banks)


def _nearest(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B×C×H×W float maps sampled at ``size`` as :func:`~.retrieval.resize_ids` samples ids."""
    return maps if tuple(maps.shape[-2:]) == tuple(size) else F.interpolate(maps, size=tuple(size), mode="nearest-exact")


def batch_loss(net: nn.Module, batch: dict, cfg: TrainConfig, memory: PrototypeMemory,
               device: torch.device) -> torch.Tensor:
    """SegSort loss of one batch: unsupervised on the prior's regions, or supervised on vMF clusters.

    The supervised clustering starts from the batch's ``grid`` and uses its ``locations`` when the dataset
    gives them (VOC: carried from the original image), else the grid and coordinates of the map.
    The network runs under bf16 autocast on CUDA; its B×D×h×w embeddings, the vMF clustering and the loss
    are in float32."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        embeddings = net(normalize(batch["image"].to(device, non_blocking=True)))
    embeddings = embeddings.float()
    size = embeddings.shape[-2:]
    if not cfg.supervised:
        return segment_sort_loss(embeddings, resize_ids(batch["segments"].to(device), size), cfg.concentration)
    labels = resize_ids(batch["label"].to(device), size)
    initial = resize_ids(batch["grid"].to(device), size) if "grid" in batch else None
    locations = _nearest(batch["locations"].to(device), size) if "locations" in batch else None
    clusters = vmf_cluster(embeddings.detach(), cfg.grid, cfg.kmeans_iterations, valid=labels >= 0,
                           initial=initial, locations=locations)
    return supervised_segment_sort_loss(embeddings, clusters, labels, cfg.concentration, memory)


def _checkpoint_state(net, optimizer, memory, cfg, stage, epoch, losses) -> dict:
    return {"config": asdict(cfg), "stage": stage, "epoch": epoch, "losses": losses,
            "net": getattr(net, "module", net).state_dict(), "optimizer": optimizer.state_dict(),
            "memory": memory.state_dict(), "torch_rng": torch.get_rng_state()}


def _fixed_fields(config: dict) -> dict:
    """The fields a resumed run must keep; a field missing from an older checkpoint takes its default."""
    return {key: value for key, value in {**asdict(TrainConfig()), **config}.items() if key not in RESUMABLE_CHANGES}


def train(cfg: TrainConfig, out: Path, device: torch.device, rank: int = 0,
          world_size: int = 1) -> tuple[nn.Module, list[float]]:
    """Train every stage of :func:`stages` (resuming ``out/checkpoint.pt`` when present, in whichever stage
    it stopped); returns the network and the mean loss per epoch (all stages, in order)."""
    batch_size = per_process_batch(cfg.batch_size, world_size)
    plan = stages(cfg)
    first_dataset = training_set(cfg, plan[0].split)
    net = build_embedding_net(cfg.arch, cfg.embedding_dim, cfg.weights, seed=cfg.seed).to(device)
    optimizer = make_optimizer(net, cfg)
    memory = make_memory(cfg, batch_size)
    checkpoint_path = out / "checkpoint.pt"
    start_stage, start_epoch, losses = 0, 0, []
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if _fixed_fields(state["config"]) != _fixed_fields(asdict(cfg)):
            raise course_config.ConfigError(
                f"{checkpoint_path} was written with another configuration; use a new --out or delete the "
                f"checkpoint to start again (only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE_CHANGES)} "
                "may change on resume)")
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        memory.load_state_dict(state["memory"])
        torch.set_rng_state(state["torch_rng"])
        start_stage, start_epoch, losses = state.get("stage", 0), state["epoch"], state["losses"]
        if start_stage >= len(plan):  # trained a stage this run does not ask for: never evaluate it as this run
            raise course_config.ConfigError(f"{checkpoint_path} has trained stage {start_stage + 1}, more than the "
                                            f"{len(plan)} asked for: use a new --out, or --overwrite to start again")
        if rank == 0:
            print(f"resuming from {checkpoint_path}: stage {start_stage + 1}, after epoch {start_epoch}", flush=True)
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    net.train()
    for index in range(start_stage, len(plan)):
        stage = plan[index]
        dataset = first_dataset if index == 0 else training_set(cfg, stage.split)
        sampler = DistributedSampler(dataset, world_size, rank, shuffle=True, seed=cfg.seed, drop_last=True)
        loader = DataLoader(dataset, batch_size, sampler=sampler, num_workers=cfg.num_workers, drop_last=True,
                            pin_memory=device.type == "cuda", persistent_workers=cfg.num_workers > 0)
        if len(loader) == 0:
            raise course_config.ConfigError(f"{len(dataset)} {stage.split} images give no batch of {batch_size} "
                                            f"per process ({world_size} processes): lower --batch-size")
        steps = stage.steps if stage.steps is not None else cfg.epochs * len(loader)
        total_steps = cli.cap_steps(steps, cfg.max_steps)   # --max-steps, COURSE_SMOKE
        epochs = math.ceil(total_steps / len(loader))
        first_epoch = start_epoch if index == start_stage else 0
        if first_epoch > epochs:  # its weights have trained longer than this run asks: never evaluate them as this run
            raise course_config.ConfigError(f"{checkpoint_path} has trained {first_epoch} epochs of stage {index + 1}, "
                                            f"more than the {epochs} asked for: use a new --out, or --overwrite to "
                                            "start again")
        if index > 0 and first_epoch == 0:
            start_second_stage(net, optimizer, cfg.seed)
            set_stage_lr(optimizer, stage.lr)
        for epoch in range(first_epoch, epochs):
            sampler.set_epoch(epoch)
            running = []
            steps_range = range(epoch * len(loader), min((epoch + 1) * len(loader), total_steps))
            label = f"stage {index + 1}/{len(plan)} epoch {epoch + 1}/{epochs}" if len(plan) > 1 else \
                f"epoch {epoch + 1}/{epochs}"
            bar = course_config.progress(zip(steps_range, loader), total=len(steps_range), desc=label,
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
                cli.save_atomic(_checkpoint_state(net, optimizer, memory, cfg, index, epoch + 1, losses),
                                checkpoint_path)
                print(f"{label}: loss {losses[-1]:.4f}", flush=True)
    return getattr(net, "module", net), losses


# ----------------------------------------------------------------------------- evaluation
def evaluation_data(cfg: TrainConfig) -> tuple[Iterable, Iterable, int]:
    """Re-iterable (images N×3×H×W, labels N×H×W) batches of the training images (the retrieval bank and
    the label-free k-means) and of the validation images, and the number of classes. Toy: the first
    ``n_train`` / ``n_val`` images in chunks; VOC: :func:`bank_split` / ``val`` at full size, one image a batch."""
    if cfg.dataset == "toy":
        chunk = lambda images, labels: list(zip(images.split(200), labels.split(200)))
        world = (cfg.world_kind, cfg.world_version)
        return (chunk(*toy_split("train", cfg.n_train, cfg.size, cfg.seed, *world)),
                chunk(*toy_split("val", cfg.n_val, cfg.size, cfg.seed, *world)), ToyWorld(cfg.world_kind).num_classes)

    def loader(split: str, limit: int | None) -> DataLoader:
        dataset = VOC2012(cfg.data_root, split)
        if limit is not None:
            dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
        return DataLoader(dataset, batch_size=1, num_workers=cfg.num_workers,
                          collate_fn=lambda samples: (samples[0]["image"][None], samples[0]["label"][None]))

    return loader(bank_split(cfg), cfg.n_train), loader("val", cfg.n_val), len(VOC2012.classes)


def _cluster_size(cfg: TrainConfig, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """Where test-time clustering runs: the label (input) resolution, or the embedding's."""
    return tuple(labels.shape[-2:]) if cfg.eval_resolution == "label" else tuple(embeddings.shape[-2:])


@torch.no_grad()
def segment_predictions(train_batches: Iterable, val_batches: Iterable, n_classes: int,
                        cfg: TrainConfig) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Single-scale SegSort predictions: for each validation batch (``cfg.eval_batch_size`` images), the
    kNN-retrieval class ids, the label-free cluster ids (spherical k-means on the training prototypes, K =
    ``n_classes``) and the labels, all n×H×W at the labels' resolution.

    ``train_batches`` / ``val_batches``: iterables of (embeddings N×D×h×w, labels N×H×W), each read once: the
    training ones build the retrieval bank and the label-free k-means (lazily, on the first ``next``)."""
    retrieval = SegmentRetrieval(n_classes, cfg.k_nearest, cfg.grid, cfg.kmeans_iterations, cfg.eval_batch_size)
    label_free = LabelFreeSegments(n_classes, cfg.grid, cfg.kmeans_iterations, cfg.eval_batch_size, cfg.seed)
    train_prototypes = []
    for embeddings, labels in course_config.progress(train_batches, desc="training prototypes", leave=False):
        size = _cluster_size(cfg, embeddings, labels)
        retrieval.add(embeddings, resize_ids(labels, size))
        train_prototypes.append(label_free.prototypes(embeddings, size))
    label_free.fit_prototypes(torch.cat(train_prototypes))
    for embeddings, labels in course_config.progress(val_batches, desc="validation", leave=False):
        at_labels = lambda ids: resize_ids(ids, labels.shape[-2:])
        for start in range(0, len(embeddings), cfg.eval_batch_size):
            window = slice(start, start + cfg.eval_batch_size)
            batch = segment_images(embeddings[window], _cluster_size(cfg, embeddings, labels), cfg.grid,
                                   cfg.kmeans_iterations)
            yield (at_labels(retrieval.classify(batch.prototypes)[batch.ids]),
                   at_labels(label_free.assign(batch.prototypes)[batch.ids]), labels[window])


def evaluate_embeddings(train_batches: Iterable, val_batches: Iterable, n_classes: int, cfg: TrainConfig) -> dict:
    """kNN-retrieval (identity mapping) and label-free (Hungarian) mIoU / accuracy in percent of
    :func:`segment_predictions`."""
    knn, clusters = UnsupervisedMetrics(n_classes, hungarian=False), UnsupervisedMetrics(n_classes)
    for knn_ids, cluster_ids, labels in segment_predictions(train_batches, val_batches, n_classes, cfg):
        knn.update(knn_ids, labels)
        clusters.update(cluster_ids, labels)
    return {protocol: {key: metrics.compute()[key] for key in ("mIoU", "accuracy")}
            for protocol, metrics in (("knn", knn), ("label_free", clusters))}


def evaluate_embedding(net: nn.Module, cfg: TrainConfig, train_batches: Iterable, val_batches: Iterable,
                       n_classes: int, device: torch.device) -> dict:
    """:func:`evaluate_embeddings` of one network on (images, labels) batches, embedded batch by batch."""
    embedded = lambda batches: ((embed(net, images, cfg.eval_batch_size, device), labels) for images, labels in batches)
    return evaluate_embeddings(embedded(train_batches), embedded(val_batches), n_classes, cfg)


@torch.no_grad()
def evaluate_multiscale(net: nn.Module, cfg: TrainConfig, train_batches: Iterable, val_batches: Iterable,
                        n_classes: int, device: torch.device) -> dict:
    """:func:`evaluate_embeddings`' two protocols with the official test-time procedure (:mod:`.inference`):
    training prototypes from the windows' summed embeddings at each image's resolution; every validation
    image scored at :data:`~.inference.INFERENCE_SCALES` with flips, the kNN votes (and, for the label-free
    protocol, one vote for the nearest centre) summed per pixel; the prediction is the arg-max.
    ``train_batches`` / ``val_batches``: (images N×3×H×W in [0, 1], labels N×H×W), one image each."""
    net.eval()
    retrieval = SegmentRetrieval(n_classes, cfg.k_nearest, cfg.grid, cfg.kmeans_iterations, 1)
    label_free = LabelFreeSegments(n_classes, cfg.grid, cfg.kmeans_iterations, 1, cfg.seed)
    train_prototypes = []
    for images, labels in course_config.progress(train_batches, desc="training prototypes", leave=False):
        for image, label in zip(images, labels):
            embedding = window_embeddings(net, image, cfg.eval_window, cfg.eval_stride, device)[None]
            retrieval.add(embedding, label[None])
            train_prototypes.append(label_free.prototypes(embedding))
    label_free.fit_prototypes(torch.cat(train_prototypes))

    def score(prototypes: torch.Tensor) -> torch.Tensor:          # S×D → S×(C + K) votes
        prototypes = prototypes.cpu()
        return torch.cat([retrieval.votes(prototypes), F.one_hot(label_free.assign(prototypes), n_classes)], 1)

    knn, clusters = UnsupervisedMetrics(n_classes, hungarian=False), UnsupervisedMetrics(n_classes)
    for images, labels in course_config.progress(val_batches, desc="validation (multi-scale)", leave=False):
        for image, label in zip(images, labels):
            scores = multiscale_scores(net, image, score, INFERENCE_SCALES, INFERENCE_FLIP, cfg.eval_window,
                                       cfg.eval_stride, cfg.grid, cfg.kmeans_iterations, device)
            knn.update(scores[:n_classes].argmax(0)[None], label[None])
            clusters.update(scores[n_classes:].argmax(0)[None], label[None])
    return {protocol: {key: metrics.compute()[key] for key in ("mIoU", "accuracy")}
            for protocol, metrics in (("knn", knn), ("label_free", clusters))}


def evaluate(trained: nn.Module, cfg: TrainConfig, device: torch.device) -> dict:
    """Scores of the trained and of the untrained network (same architecture and seed), as flat keys
    ``knn_mIoU``, ``knn_untrained_mIoU``, ``label_free_mIoU``, ... (and ``_accuracy``)."""
    train_batches, val_batches, n_classes = evaluation_data(cfg)
    untrained = build_embedding_net(cfg.arch, cfg.embedding_dim, cfg.weights, seed=cfg.seed).to(device)
    metrics = {}
    measure = evaluate_multiscale if cfg.inference == "multiscale" else evaluate_embedding
    for suffix, net in (("", trained), ("_untrained", untrained)):
        scores = measure(net, cfg, train_batches, val_batches, n_classes, device)
        for protocol, values in scores.items():
            for name, value in values.items():
                metrics[f"{protocol}{suffix}_{name}"] = round(value, 3)
    return metrics


# ----------------------------------------------------------------------------- command line
def resolve_config(profile: str | None = None, **given) -> TrainConfig:
    """The configuration of a run: :class:`TrainConfig`'s defaults, then the profile's
    (:data:`PROFILE_DEFAULTS`; ``profile`` default ``$COURSE_PROFILE``), with ``supervised=True`` the
    supervised recipe's (:data:`SUPERVISED_DEFAULTS`), then under ``COURSE_SMOKE`` the smoke sizes
    (:data:`SMOKE_DEFAULTS`), then the ``given`` fields (``weights="none"``: random)."""
    profile = course_config.profile(profile)
    values = {**PROFILE_DEFAULTS[profile], **(SUPERVISED_DEFAULTS[profile] if given.get("supervised") else {}),
              **(SMOKE_DEFAULTS[profile] if course_config.smoke() else {}), **given, "profile": profile}
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
    if cfg.world_version not in WORLD_VERSIONS:
        parser.error(f"--world-version must be one of {', '.join(map(str, WORLD_VERSIONS))}, got {cfg.world_version}")
    if cfg.dataset == "toy" and not TOY_MIN_SIZE <= cfg.size <= TOY_MAX_SIZE:
        parser.error(f"--size must be {TOY_MIN_SIZE}..{TOY_MAX_SIZE} for the toy world's images, got {cfg.size}")
    for name, allowed in STRING_CHOICES.items():
        if getattr(cfg, name) not in allowed:
            parser.error(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    if cfg.weights not in (None, IMAGENET_WEIGHTS):
        parser.error(f"--weights must be {IMAGENET_WEIGHTS} or none, got {cfg.weights!r}")
    if cfg.stage2_steps and cfg.dataset != "voc2012":
        parser.error(f"--stage2-steps {cfg.stage2_steps} needs --dataset voc2012 (the second stage trains on VOC "
                     "train); use 0 for the toy world")
    if cfg.inference == "multiscale" and (cfg.eval_window is None or cfg.eval_stride is None):
        parser.error("--inference multiscale needs --eval-window and --eval-stride (official: 480 and 320)")
    if args.out is None:
        args.out = course_config.default_run_dir("segsort", cfg.dataset, cfg.arch)
    return cfg, args


def check_inputs(cfg: TrainConfig, train: bool = True, evaluate: bool = True) -> None:
    """Stop at once, before anything is loaded, when a download the run needs is missing: the VOC splits
    of the stages, of the retrieval bank and ``val`` (``DatasetNotFoundError``), the
    ResNet's ImageNet weights (``WeightsNotFoundError``; the untrained baseline starts from them too);
    each message names the ``data_scripts`` command that fetches it. A missing ``--hed-dir`` is a
    ``ConfigError``."""
    if cfg.dataset == "voc2012":
        needed = {stage.split for stage in stages(cfg)} if train else set()
        for split in sorted(needed | ({bank_split(cfg), "val"} if evaluate else set())):
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
    resolved = {**asdict(cfg), "recipe": recipe(cfg), "out": args.out, "smoke": course_config.smoke(),
                "no_eval": args.no_eval}
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


OFFICIAL_DEVIATIONS: tuple[Deviation, ...] = (
    Deviation("recipe followed", "the single-GPU scripts: batch 8, 336 crops, 30 000 + 30 000 (supervised) or "
              "10 000 (unsupervised) steps, k = 15",
              "also a 5-GPU script: batch 16, 480 crops, 100 000 + 30 000 steps, k = 21, head kept in stage 2",
              "the README's main recipe and the paper's setting; one recipe per variant keeps the preset unambiguous",
              "bashscripts/voc12/train_segsort.sh:11-17, train_segsort_mgpu.sh:11-19,32",
              "tests/test_segsort_recipe.py::test_full_presets_pin_the_official_values"),
    Deviation("ImageNet backbone", "torchvision ResNet-101 IMAGENET1K_V1 (stride in the 3×3 conv, BN eps 1e-5)",
              "TF-slim resnet_v1_101.ckpt (stride in the 1×1 conv, BN eps 1e-3)",
              "the course fetches checksummed PyTorch weights (data_scripts/get_weights.py); the TF checkpoint does "
              "not load into a PyTorch ResNet", "README.md (ImageNet Pre-Trained Models), network/common/resnet_v1.py",
              "tests/test_segsort_recipe.py::test_full_presets_pin_the_official_values"),
    Deviation("steps per stage", "30 000 updates, poly decay over 30 000",
              "num_steps = NUM_STEPS + 1 = 30 001 updates, poly decay over 30 001, checkpoint at step 30 000",
              "the extra update runs at lr ≈ 0; the round number is the recipe's",
              "bashscripts/voc12/train_segsort.sh:68,162; pyscripts/train/train_segsort.py:286-311",
              "tests/test_segsort_recipe.py::test_full_presets_pin_the_official_values"),
    Deviation("default over-segmentation (unsupervised)", "Felzenszwalb superpixels (--prior hed --hed-dir D for "
              "the paper's)", "HED-owt-ucm regions (VOC2012/hed/*.png)",
              "the HED-owt-ucm masks are a Dropbox download outside data_scripts; superpixels need nothing extra",
              "seg_models/image_reader.py:172; README.md (Data Preparation)", "tests/test_segsort_recipe.py::test_full_presets_pin_the_official_values"),
    Deviation("several GPUs", "torchrun: each of N processes takes 8/N images; its loss uses its own images' "
              "prototypes and its own memory banks of 25·8/N",
              "train_segsort_mgpu.py: one loss on the embeddings of all GPUs concatenated, banks of 25·B",
              "DDP computes the loss per process; gathering prototypes with their gradients is not implemented. "
              "One GPU is exact", "pyscripts/train/train_segsort_mgpu.py:186-193",
              "tests/test_segsort_recipe.py::test_batch_is_divided_among_processes"),
    Deviation("resampling", "PyTorch bilinear with half-pixel centres (image scaling, pyramid upsampling, "
              "inference); labels, grid and coordinates shrunk to the embedding by nearest at each 8×8 cell's centre",
              "TF1 legacy resize (no half-pixel offset); resize_nearest_neighbor takes each cell's top-left pixel",
              "PyTorch has no legacy TF1 mode; sub-pixel differences", "seg_models/image_reader.py:30-33; "
              "pyscripts/train/train_segsort.py:165-170; seg_models/models/pspnet.py:64", None),
    Deviation("test-time location channels", "y, x = linspace(0, 1) over each window",
              "y, x = i / H, j / W ('float' location features)",
              "one grid for the course's clustering; the scale differs by H/(H-1) (0.2 % at 480 px)",
              "pyscripts/inference/inference_segsort_msc.py:178-179", None),
    Deviation("precision", "bf16 autocast for the network on CUDA; clustering, loss and votes in float32",
              "float32 (TensorFlow 1)", "speed and memory on current GPUs (design §7)",
              "pyscripts/train/train_segsort.py", None),
    Deviation("empty vMF clusters", "an empty cluster keeps a zero prototype and is never chosen again",
              "0/0 normalisation gives a NaN prototype", "no NaN reaches the loss (design §8)",
              "network/segsort/common_utils.py:20,42-50",
              "tests/test_segsort.py::test_empty_clusters_give_zero_prototypes_and_are_never_chosen"),
)
"""Where this method's full preset still differs from the official code (:mod:`course_lib.deviations`)."""
