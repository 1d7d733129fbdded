"""PASS pre-training: SwAV + pixel-to-pixel alignment + deep-to-shallow supervision on a ResNet.

Gao et al., "Large-scale Unsupervised Semantic Segmentation" (TPAMI 2022), §4.1. Each image gives
multi-crop views (two large crops first); the ResNet's last stage, average-pooled, goes through the
projection MLP to an L2-normalised embedding z scored against the prototypes (SwAV,
:mod:`course_lib.ssl.swav`); the last feature maps of the two large crops are aligned pixel to pixel on
their overlap (:mod:`.p2p`); stage 3 of the two large crops predicts the deep codes (:mod:`.d2s`).

    L = (L_swav + L_d2s) / 2 + L_p2p                  (official weights 1, 1 with ``--shallow 3``)

SGD (momentum 0.9) with a cosine learning rate, LARS-scaled as SwAV's LARC (``optimizer="lars"``, the
official runs; plain ``"sgd"`` and ``"adamw"`` for small data, see :func:`.training.build_optimizer`). An
optional contrastive pixel-to-pixel term (``p2p_contrast_weight``, :func:`.p2p.pixel_contrast_loss`; 0 in
the ImageNet-S presets) is added to L for the toy world's preset. ``p2p_padding`` chooses the official
P2P sampling ("zeros": zero padding, non-overlapping pairs count with cosine 0) or the toy preset's
("border", overlapping pairs only), :mod:`.p2p`; ``conv_init`` the heads' initialisation (official Kaiming
fan-out, :func:`course_lib.models.resnet.kaiming_fan_out_`, or PyTorch's default for the toy preset). The queue starts
at ``epoch_queue_starts``; prototypes are frozen for the first ``freeze_prototypes_niters`` iterations.
A checkpoint is written after every epoch and a run resumes from it. Under ``torchrun`` every process
trains on its share of the data, Sinkhorn normalises over all processes' samples.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..config import seed_everything
from ..models.resnet import build_resnet
from ..ssl.swav import Prototypes, SwAVQueue, freeze_prototypes_if_early, swapped_prediction_loss, swav_codes
from .d2s import ShallowHead, deep_to_shallow_loss, image_mlp
from .multicrop import CropSpec, MultiCropDataset, MultiCropWithBoxes
from .p2p import NON_OVERLAP_GRID, P2P_PADDINGS, PixelToPixelHead, pixel_contrast_loss, pixel_to_pixel_loss
from ..distributed import DistContext, init_distributed
from .training import (CONV_INITS, build_optimizer, config_from_dict, cosine_schedule, fit, init_convs_, load_checkpoint,
                       make_loader, save_checkpoint, unwrap, wrap_model)


@dataclass
class PretrainConfig:
    """Every setting of a pre-training run (saved in its checkpoint). Defaults: PASS on ImageNet-S50."""

    arch: str = "resnet18"
    hidden_mlp: int = 512
    feat_dim: int = 128
    nmb_prototypes: int = 500
    crops: list[CropSpec] = field(default_factory=lambda: [CropSpec(224, 2, 0.14, 1.0), CropSpec(96, 6, 0.05, 0.14)])
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    grayscale_p: float = 0.2
    invert_p: float = 0.0
    jitter_p: float = 0.8                   # SwAV's colour jitter (0.8, 0.8, 0.8, 0.2) with this probability
    recolour_p: float = 0.0                 # toy-world recolouring (data.transforms.RandomRecolour)
    crops_for_assign: tuple[int, int] = (0, 1)
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    queue_length: int = 2048
    epoch_queue_starts: int = 15
    epochs: int = 200
    batch_size: int = 32
    base_lr: float = 0.6
    final_lr: float = 0.0006
    warmup_epochs: int = 0
    start_warmup: float = 0.0
    weight_decay: float = 1e-6
    optimizer: str = "lars"                 # "lars", "sgd" or "adamw" (training.OPTIMIZERS)
    freeze_prototypes_niters: int = 1001
    shallow_stage: int | None = 3
    grid_size: int = 7
    p2p_padding: str = "zeros"              # P2P grid sampling (p2p.P2P_PADDINGS): official "zeros", toy "border"
    p2p_contrast_weight: float = 0.0        # optional contrastive P2P term (p2p.pixel_contrast_loss; 0 = PASS)
    conv_init: str = "kaiming_fan_out"      # the heads' convolutions (training.CONV_INITS): official, toy "torch"
    seed: int = 10010
    workers: int = 0

    def __post_init__(self) -> None:
        self.crops = [CropSpec(**c) if isinstance(c, dict) else CropSpec(*c) if isinstance(c, (list, tuple)) else c
                      for c in self.crops]
        self.blur_sigma = tuple(self.blur_sigma)
        self.crops_for_assign = tuple(self.crops_for_assign)
        if self.crops[0].number < 2:
            raise ValueError("the first crop group must hold the two large crops (number >= 2)")
        if self.shallow_stage is not None and self.shallow_stage not in (1, 2, 3):
            raise ValueError(f"shallow_stage must be 1, 2, 3 or None, got {self.shallow_stage}")
        if self.shallow_stage is not None and self.crops_for_assign != (0, 1):
            raise ValueError("deep-to-shallow supervision needs crops_for_assign = (0, 1)")
        if self.p2p_padding not in P2P_PADDINGS:
            raise ValueError(f"p2p_padding must be one of {', '.join(P2P_PADDINGS)}, got {self.p2p_padding!r}")
        if self.conv_init not in CONV_INITS:
            raise ValueError(f"conv_init must be one of {', '.join(CONV_INITS)}, got {self.conv_init!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "PretrainConfig":
        """The config of a saved dict; one saved before ``p2p_padding`` / ``conv_init`` existed was trained
        with border sampling and PyTorch's default initialisation (:data:`LEGACY_PRETRAIN`)."""
        return config_from_dict(cls, values, LEGACY_PRETRAIN)


LEGACY_PRETRAIN = {"p2p_padding": "border", "conv_init": "torch"}
"""What the pre-training did before these settings existed (e.g. the shipped toy checkpoint's run)."""


class PASSModel(nn.Module):
    """Backbone, projection head and prototypes (SwAV), pixel-to-pixel head, shallow head (D2S)."""

    def __init__(self, arch: str, hidden_mlp: int, feat_dim: int, nmb_prototypes: int, shallow_stage: int | None = 3,
                 p2p_padding: str = "zeros", conv_init: str = "kaiming_fan_out"):
        super().__init__()
        self.backbone = build_resnet(arch)
        channels = self.backbone.out_channels
        self.projection_head = image_mlp(channels, hidden_mlp, feat_dim)
        self.prototypes = Prototypes(feat_dim, nmb_prototypes)
        self.pixel_head = PixelToPixelHead(channels, hidden_mlp, feat_dim, p2p_padding)
        self.shallow_stage = shallow_stage
        self.shallow_head = (ShallowHead(self.backbone.stage_channels[f"layer{shallow_stage}"], hidden_mlp, feat_dim)
                             if shallow_stage is not None else None)
        for head in (self.pixel_head, self.shallow_head):  # the backbone's convolutions are already Kaiming's
            if head is not None:
                init_convs_(head, conv_init)

    @classmethod
    def from_config(cls, config: PretrainConfig) -> "PASSModel":
        return cls(config.arch, config.hidden_mlp, config.feat_dim, config.nmb_prototypes, config.shallow_stage,
                   config.p2p_padding, config.conv_init)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Last-stage features B×C×h×w → L2-normalised embeddings z (B×D): average pool, projection MLP."""
        return F.normalize(self.projection_head(features.mean(dim=(2, 3))), dim=1)

    def forward(self, crops: Sequence[torch.Tensor], grid_a: torch.Tensor, grid_b: torch.Tensor) -> dict:
        """``crops``: V normalised B×3×s×s views, the two large first; grids B×G×G×2 of their overlap.

        Returns ``"embeddings"`` / ``"scores"`` (V tensors B×D / B×K), ``"shallow_scores"`` (2 × B×K,
        against the detached prototypes; absent without a shallow head) and ``"p2p"`` (z_a, z_b, p_a, p_b)."""
        batch = crops[0].shape[0]
        outputs: dict = {}
        pooled, start = [], 0
        while start < len(crops):  # one backbone pass per group of equally sized crops
            end = start
            while end < len(crops) and crops[end].shape[-1] == crops[start].shape[-1]:
                end += 1
            stages = self.backbone.stages(torch.cat(list(crops[start:end])))
            last = stages["layer4"]
            if start == 0:
                outputs["p2p"] = self.pixel_head(last[:batch], last[batch:2 * batch], grid_a, grid_b)
                if self.shallow_head is not None:
                    shallow = self.shallow_head(stages[f"layer{self.shallow_stage}"][:2 * batch])
                    detached = shallow @ self.prototypes.weight.detach().t()
                    outputs["shallow_scores"] = [detached[:batch], detached[batch:]]
            pooled.append(last.mean(dim=(2, 3)))
            start = end
        embeddings = F.normalize(self.projection_head(torch.cat(pooled)), dim=1)
        scores = self.prototypes(embeddings)
        outputs["embeddings"] = list(embeddings.split(batch))
        outputs["scores"] = list(scores.split(batch))
        return outputs


def pass_losses(outputs: dict, prototypes: Prototypes, overlap: torch.Tensor, config: PretrainConfig,
                queue: SwAVQueue | None = None) -> dict[str, torch.Tensor]:
    """The three PASS losses and their total (L_swav + L_d2s) / 2 + L_p2p (L_swav + L_p2p without D2S)."""
    codes = swav_codes(outputs["embeddings"], outputs["scores"], prototypes, config.crops_for_assign, queue,
                       config.epsilon, config.sinkhorn_iterations)
    swav = swapped_prediction_loss(outputs["scores"], codes, config.crops_for_assign, config.temperature)
    z_a, z_b, p_a, p_b = outputs["p2p"]
    p2p = pixel_to_pixel_loss(p_a, p_b, z_a, z_b, overlap if config.p2p_padding == "border" else None)
    losses = {"swav": swav, "p2p": p2p}
    if "shallow_scores" in outputs:
        losses["d2s"] = deep_to_shallow_loss(outputs["shallow_scores"], codes, config.temperature)
        losses["loss"] = (swav + losses["d2s"]) / 2 + p2p
    else:
        losses["loss"] = swav + p2p
    if config.p2p_contrast_weight > 0:
        losses["p2p_nce"] = pixel_contrast_loss(z_a, z_b, overlap, config.temperature)
        losses["loss"] = losses["loss"] + config.p2p_contrast_weight * losses["p2p_nce"]
    return losses


def pretrain(config: PretrainConfig, dataset: Dataset, out_dir: str | Path, device: str | torch.device | None = None,
             max_steps: int | None = None) -> Path:
    """Pre-train on ``dataset`` (sample dicts with ``"image"``), resuming from ``out_dir/checkpoint.pt``.

    Writes ``checkpoint.pt`` after every epoch (model, optimizer, epoch, per-step losses, config) and
    each process's queue in ``queue<rank>.pt``. ``max_steps`` stops early (for tests and lessons).
    Returns the checkpoint path. Runs on every process of a ``torchrun`` launch."""
    processes = init_distributed(device)
    out_dir = Path(out_dir)
    seed_everything(config.seed + processes.rank)
    model = wrap_model(PASSModel.from_config(config), processes)
    prototypes = unwrap(model).prototypes
    optimizer, lars_decay = build_optimizer(model.parameters(), config.optimizer, config.base_lr, config.weight_decay)
    views = MultiCropDataset(dataset, MultiCropWithBoxes.from_config(config), config.grid_size,
                             NON_OVERLAP_GRID if config.p2p_padding == "zeros" else None)
    loader = make_loader(views, config.batch_size, processes, shuffle=True, seed=config.seed, drop_last=True,
                         workers=config.workers)
    schedule = cosine_schedule(config.base_lr, config.final_lr, len(loader) * config.epochs,
                               len(loader) * config.warmup_epochs, config.start_warmup)
    queue = SwAVQueueSlot(config, processes, out_dir / f"queue{processes.rank}.pt")

    def compute_losses(batch: dict, iteration: int) -> dict[str, torch.Tensor]:
        prototypes.normalize_()
        device = processes.device
        outputs = model([crop.to(device) for crop in batch["crops"]], batch["grid_a"].to(device),
                        batch["grid_b"].to(device))
        return pass_losses(outputs, prototypes, batch["overlap"].to(device), config, queue.queue)

    fit(model, optimizer, loader, compute_losses, epochs=config.epochs, schedule=schedule, processes=processes,
        checkpoint_path=out_dir / "checkpoint.pt", config=asdict(config), seed=config.seed,
        lars_weight_decay=lars_decay,
        after_backward=lambda it: freeze_prototypes_if_early(prototypes, it, config.freeze_prototypes_niters),
        on_epoch_start=queue.start_if_due, on_epoch_end=lambda epoch: queue.save(), max_steps=max_steps,
        desc="pretrain epoch")
    return out_dir / "checkpoint.pt"


class SwAVQueueSlot:
    """The queue of one process across epochs: created at ``epoch_queue_starts``, saved after every
    epoch in ``path`` and restored from it (its length rounded down to a multiple of the global batch)."""

    def __init__(self, config, processes: DistContext, path: Path):
        global_batch = config.batch_size * processes.world_size
        self.length = (config.queue_length - config.queue_length % global_batch) // processes.world_size
        self.config, self.processes, self.path = config, processes, path
        self.queue: SwAVQueue | None = None
        if self.length > 0 and path.is_file():
            self.queue = self._new()
            self.queue.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    def _new(self) -> SwAVQueue:
        return SwAVQueue(len(self.config.crops_for_assign), self.length, self.config.feat_dim, self.processes.device)

    def start_if_due(self, epoch: int) -> None:
        if self.queue is None and self.length > 0 and epoch >= self.config.epoch_queue_starts:
            self.queue = self._new()

    def save(self) -> None:
        if self.queue is not None:
            save_checkpoint(self.queue.state_dict(), self.path)


def load_pass_model(path: str | Path) -> tuple[PASSModel, PretrainConfig, list[dict]]:
    """A pre-trained :class:`PASSModel` (eval mode), its config and its per-step loss history."""
    state = load_checkpoint(path, "pre-training checkpoint")
    config = PretrainConfig.from_dict(state["config"])
    model = PASSModel.from_config(config)
    model.load_state_dict(state["model"])
    return model.eval(), config, state["history"]
