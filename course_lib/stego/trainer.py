"""STEGO's training loop: cached or on-the-fly features, one process or many (DDP), checkpoints and resume.

- :func:`init_distributed` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and
  joins the process group (NCCL on GPUs, gloo on CPUs); without torchrun it is a single process.
- :class:`CachedPairs` serves batches from frozen features held in memory or memory-mapped (toy world,
  small sets); :class:`OnlinePairs` loads the images and runs the frozen backbone every step (bf16
  autocast on CUDA), for datasets whose features do not fit on disk.
- :func:`train_stego` trains a :class:`~.model.StegoModel` for ``config.steps`` steps; process ``rank``
  sees its share of every batch of pairs (:class:`~.data.PairBatchSampler`), the gradients are averaged
  by DistributedDataParallel. With ``cluster_init="k-means++"`` the cluster probe's centres are first
  seeded from the codes of the first batch. Every ``checkpoint_every`` steps (and at the end) process 0 writes
  ``checkpoint.pt`` atomically; an existing checkpoint of the same configuration is resumed. Randomness
  (grids, negatives, dropout) is re-seeded from (seed, step, rank) at every step, so a resumed run
  gives exactly the weights of an uninterrupted one.
- :class:`BestCheckpoints`: the official trainer's validation during training and its best checkpoints
  (:class:`~.configs.CheckpointSelection`), kept by process 0 and resumed with the run.
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..cli import replace_when_written, save_atomic
from ..config import ConfigError, progress, progress_disabled
from ..distributed import DistContext
from ..evaluation.probes import spherical_kmeans_plus_plus
from ..models.features import run_backbone
from .configs import CheckpointSelection, StegoConfig
from .correlation import unit
from .data import PairBatchSampler, PairDataset
from .model import StegoModel

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
LOSS_KEYS = ("self", "knn", "rand", "correlation", "linear", "cluster", "total")


class CachedPairs:
    """Batches of (features, partner features, labels) from cached N×C×h×w features and N×H×W labels."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, table: torch.Tensor):
        if not len(features) == len(labels) == len(table):
            raise ValueError(f"features ({len(features)}), labels ({len(labels)}) and kNN table ({len(table)}) "
                             "must describe the same images")
        self.features, self.labels, self.table = features, labels, table

    @property
    def in_channels(self) -> int:
        return int(self.features.shape[1])

    def batches(self, sampler: PairBatchSampler, device: torch.device) -> Iterator[Batch]:
        for pairs in sampler:
            index, partner = torch.tensor(pairs).T
            yield (self.features[index].to(device).float(), self.features[partner].to(device).float(),
                   self.labels[index].to(device).long())


class OnlinePairs:
    """Batches computed on the fly: images (and partners' images) loaded by a DataLoader, features by the
    frozen ``backbone`` (no gradient; bf16 autocast on CUDA, :func:`course_lib.models.features.run_backbone`)."""

    def __init__(self, dataset: Dataset, backbone: nn.Module, table: torch.Tensor, num_workers: int = 0):
        if len(dataset) != len(table):
            raise ValueError(f"dataset ({len(dataset)}) and kNN table ({len(table)}) must describe the same images")
        self.dataset, self.backbone, self.table, self.num_workers = dataset, backbone, table, num_workers
        self.in_channels = int(getattr(backbone, "embed_dim"))

    def batches(self, sampler: PairBatchSampler, device: torch.device) -> Iterator[Batch]:
        loader = DataLoader(PairDataset(self.dataset), batch_sampler=sampler, num_workers=self.num_workers,
                            pin_memory=device.type == "cuda")
        for batch in loader:
            yield (run_backbone(self.backbone, batch["image"], device), run_backbone(self.backbone, batch["image_pos"], device),
                   batch["label"].to(device).long())


def default_checkpoint_every(steps: int) -> int:
    """Steps between checkpoints when none is given: a tenth of the run (40 of the toy run's 400, 500 of the
    official 5000), so that an interrupted run keeps most of its work."""
    return max(1, steps // 10)


def _check_resumable(saved: dict, step: int, config: StegoConfig, checkpoint: Path) -> None:
    """A checkpoint resumes a run whose configuration differs at most in ``steps``, and only when it has
    not gone past them (its weights would be labelled with fewer steps than they had); else ``ConfigError``."""
    current = config.to_dict()
    changed = sorted(name for name in set(saved) | set(current) if name != "steps" and saved.get(name) != current.get(name))
    if changed:
        raise ConfigError(f"{checkpoint} belongs to another configuration (differs in {', '.join(changed)}); "
                          "delete it or use another --out")
    if step > config.steps:
        raise ConfigError(f"{checkpoint} has trained {step} steps, more than the {config.steps} asked for; "
                          "delete it or use another --out")


@torch.no_grad()
def seed_cluster_probe(model: StegoModel, features: torch.Tensor, seed: int) -> None:
    """Spherical k-means++ centres for the cluster probe, from the codes (eval mode) of B×C×h×w features."""
    model.eval()
    codes = model.head(features)
    points = unit(codes).permute(0, 2, 3, 1).reshape(-1, codes.shape[1])
    if len(points) < model.cluster_probe.n_classes:
        raise ValueError(f"{len(points)} code vectors cannot seed {model.cluster_probe.n_classes} clusters")
    centres = spherical_kmeans_plus_plus(points.float(), model.cluster_probe.n_classes, torch.Generator().manual_seed(seed))
    model.cluster_probe.clusters.copy_(centres.to(model.cluster_probe.clusters))


class BestCheckpoints:
    """Validation every ``selection.val_freq`` steps and the ``save_top_k`` best candidate checkpoints.

    ``validate(model)`` (called by process 0 with the model in eval mode) returns the validation scores, among
    them ``monitor`` (``cluster_mIoU``, the official ``test/cluster/mIoU``); each call adds
    ``{"step", **scores}`` to :attr:`curve`. Every ``select_every``-th step is a candidate scored by that
    validation: its weights are written to ``folder/best_step<step>.pt`` (:meth:`StegoModel.save`) when they
    rank among the ``save_top_k`` best, and the file of the one that drops out is deleted. Ties keep the
    earlier step (a later checkpoint must be strictly better, as Lightning's ``ModelCheckpoint``).
    """

    FILE = re.compile(r"best_step(\d+)\.pt")

    def __init__(self, selection: CheckpointSelection, validate: Callable[[StegoModel], dict], folder: str | Path,
                 monitor: str = "cluster_mIoU"):
        if not selection.enabled:
            raise ValueError("BestCheckpoints needs a CheckpointSelection with val_freq > 0")
        self.selection, self.validate, self.folder, self.monitor = selection, validate, Path(folder), monitor
        self.curve: list[dict] = []
        self.kept: list[tuple[float, int]] = []  # (score, step), best first

    def path(self, step: int) -> Path:
        return self.folder / f"best_step{step}.pt"

    @property
    def best(self) -> tuple[float, int] | None:
        """(score, step) of the best kept checkpoint, ``None`` before the first candidate."""
        return self.kept[0] if self.kept else None

    def state(self) -> dict:
        return {"curve": self.curve, "kept": [list(item) for item in self.kept]}

    def load_state(self, state: dict) -> None:
        """Resume: the curve and the kept list of a checkpoint; best files it does not know are deleted."""
        self.curve = list(state["curve"])
        self.kept = [(float(score), int(step)) for score, step in state["kept"]]
        known = {step for _, step in self.kept}
        for path in self.folder.glob("best_step*.pt"):
            match = self.FILE.fullmatch(path.name)
            if match and int(match.group(1)) not in known:
                path.unlink()

    def after_step(self, model: StegoModel, step: int) -> None:
        """Validate at the validation steps; keep the weights of a candidate step that ranks."""
        if step % self.selection.val_freq:
            return
        model.eval()
        scores = self.validate(model)
        if self.monitor not in scores:
            raise KeyError(f"validate() returned {sorted(scores)}, without the monitored {self.monitor!r}")
        self.curve.append({"step": step, **scores})
        if step % self.selection.select_every:
            return
        score = float(scores[self.monitor])
        if len(self.kept) == self.selection.save_top_k and not score > self.kept[-1][0]:
            return
        with replace_when_written(self.path(step)) as partial:
            model.save(partial)
        self.kept = sorted(self.kept + [(score, step)], key=lambda item: (-item[0], item[1]))
        for _, dropped in self.kept[self.selection.save_top_k:]:
            self.path(dropped).unlink(missing_ok=True)
        self.kept = self.kept[:self.selection.save_top_k]


def _step_seed(seed: int, step: int, rank: int) -> int:
    return ((seed * 1_000_003 + step) * 257 + rank) % (2 ** 63)


def train_stego(model: StegoModel, source: CachedPairs | OnlinePairs, out_dir: str | Path | None = None,
                context: DistContext | None = None, checkpoint_every: int | None = None, amp: bool | None = None,
                callback: Callable[[int, dict], None] | None = None, desc: str = "STEGO",
                best: BestCheckpoints | None = None) -> list[dict]:
    """Train ``model`` for ``model.config.steps`` steps on ``source``; returns the per-step losses.

    Args:
        out_dir: where ``checkpoint.pt`` is written and resumed from (``None``: no checkpoints).
        checkpoint_every: steps between checkpoints (default :func:`default_checkpoint_every`).
        context: the process's rank / device (default: one process on ``model``'s device).
        amp: bf16 autocast of the head and losses (default: on CUDA only).
        callback: called by process 0 as ``callback(step, losses)`` after every step (e.g. a live plot).
        best: validation during training and the best checkpoints (:class:`BestCheckpoints`), run by process
            0 after every step (the others wait at a barrier); its state is saved in and resumed from
            ``checkpoint.pt``.

    Returns:
        One dict of the :data:`LOSS_KEYS` losses per step (process 0's batch), resumed steps included.
    """
    config = model.config
    checkpoint_every = checkpoint_every or default_checkpoint_every(config.steps)
    context = context or DistContext(device=next(model.parameters()).device)
    device = context.device
    amp = device.type == "cuda" if amp is None else amp
    model.to(device)
    optimizer = model.optimizer()
    start_step, history = 0, []
    checkpoint = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        _check_resumable(state["config"], state["step"], config, checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step, history = state["step"], state["history"]
    if best is not None and context.is_main:  # a fresh run starts with no best files, a resumed one with its own
        best.load_state(state.get("selection", {"curve": [], "kept": []}) if start_step else {"curve": [], "kept": []})
    sampler = PairBatchSampler(source.table, config.num_neighbors, config.batch_size, config.steps, config.seed,
                               context.rank, context.world_size, start_step)
    batches = source.batches(sampler, device)
    if start_step == 0 and config.cluster_init == "k-means++" and len(sampler):
        first = next(batches)
        seed_cluster_probe(model, first[0], config.seed)
        batches = itertools.chain([first], batches)
    network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if context.distributed else model  # DDP starts every process from process 0's weights
    model.train()
    generator = torch.Generator()
    steps = progress(batches, total=len(sampler), desc=f"training {desc}", unit="step",
                     disable=progress_disabled() or not context.is_main)
    step = start_step
    for step, (features, features_pos, labels) in enumerate(steps, start=start_step + 1):
        seed = _step_seed(config.seed, step, context.rank)
        generator.manual_seed(seed)
        torch.manual_seed(seed)  # dropout masks
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            losses = network(features, features_pos, labels, generator)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        record = {key: float(losses[key].detach()) for key in LOSS_KEYS}
        history.append(record)
        if callback is not None and context.is_main:
            callback(step, record)
        if best is not None and step % best.selection.val_freq == 0:
            if context.is_main:
                best.after_step(model, step)
                model.train()
            context.barrier()
        if checkpoint is not None and context.is_main and (step % checkpoint_every == 0 or step == config.steps):
            save_atomic({"config": config.to_dict(), "step": step, "history": history,
                          "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          **({"selection": best.state()} if best is not None else {})}, checkpoint)
    model.eval()
    context.barrier()
    return history
