"""What the three PASS training steps share: processes (``torchrun``), learning-rate schedule, LARS,
checkpoints, data loaders.

Run a step on several processes with ``torchrun --nproc_per_node=N -m course_lib.luss <step> ...``:
:func:`init_distributed` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and
joins the process group (NCCL on GPUs, gloo on CPU); models are wrapped in
``DistributedDataParallel``, each process reads its share of the data (``DistributedSampler``) and
only rank 0 writes checkpoints.

On CUDA every training step's forward pass runs under bf16 autocast (:func:`fit`); Sinkhorn and the losses
compute in float32 (:func:`course_lib.ssl.swav.float32_loss`). Under ``COURSE_SMOKE`` a step trains at
most 2 iterations (:func:`course_lib.cli.cap_steps`).
"""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from ..cli import cap_steps, save_atomic
from ..config import progress
from ..distributed import DistContext
from ..models.resnet import kaiming_fan_out_

CONV_INITS = ("kaiming_fan_out", "torch")
"""Initialisation of the convolutions a PASS step creates (heads, attention, classifier): ``"kaiming_fan_out"``
as the official ``src/resnet.py:354-363`` (:func:`course_lib.models.resnet.kaiming_fan_out_`), or ``"torch"``,
PyTorch's default (the toy preset)."""


def init_convs_(module: nn.Module, conv_init: str) -> nn.Module:
    """Initialise ``module``'s convolutions as ``conv_init`` (:data:`CONV_INITS`) says; "torch" leaves
    PyTorch's default (and draws no random numbers). Returns ``module``."""
    if conv_init not in CONV_INITS:
        raise ValueError(f"conv_init must be one of {', '.join(CONV_INITS)}, got {conv_init!r}")
    return kaiming_fan_out_(module) if conv_init == "kaiming_fan_out" else module


Config = TypeVar("Config")


def config_from_dict(cls: type[Config], values: dict, legacy: dict | None = None) -> Config:
    """The config dataclass ``cls`` of a saved dict (unknown keys dropped). ``legacy`` gives the values of the
    settings a dict written before they existed must get: what the code did then (e.g. the toy-era P2P
    sampling), not today's official defaults."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in {**(legacy or {}), **values}.items() if k in known})


def wrap_model(model: nn.Module, processes: DistContext) -> nn.Module:
    """The model on its device; ``DistributedDataParallel`` (with SyncBatchNorm on GPUs) when distributed."""
    model = model.to(processes.device)
    if not processes.distributed:
        return model
    if processes.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[processes.device.index])
    return nn.parallel.DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def make_loader(dataset: Dataset, batch_size: int, processes: DistContext, shuffle: bool, seed: int,
                drop_last: bool, workers: int = 0) -> DataLoader:
    """A loader over this process's share (``DistributedSampler``) or the whole set, seeded; call
    ``loader.sampler.set_epoch(epoch)`` (see :func:`set_epoch`) for a new order every epoch."""
    if len(dataset) < batch_size * processes.world_size and drop_last:
        raise ValueError(f"{len(dataset)} images are fewer than one batch of {batch_size} per process "
                         f"× {processes.world_size} processes; lower the batch size")
    if processes.distributed:
        sampler = DistributedSampler(dataset, processes.world_size, processes.rank, shuffle=shuffle, seed=seed,
                                     drop_last=drop_last)
    elif shuffle:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=workers,
                      persistent_workers=workers > 0)


def set_epoch(loader: DataLoader, epoch: int, seed: int) -> None:
    """Make the loader's shuffled order a function of (seed, epoch), so that a resumed run sees the same data."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    elif isinstance(loader.sampler, RandomSampler):
        loader.sampler.generator.manual_seed(seed + 1000 * epoch)


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0,
                    start_warmup: float = 0.0) -> list[float]:
    """Per-step values: linear warm-up from ``start_warmup`` to ``base``, then cosine from ``base`` to ``final``."""
    warmup = [start_warmup + (base - start_warmup) * step / max(warmup_steps, 1) for step in range(warmup_steps)]
    steps = max(total_steps - warmup_steps, 1)
    return warmup + [final + 0.5 * (base - final) * (1 + math.cos(math.pi * t / steps)) for t in range(steps)]


@torch.no_grad()
def lars_adapt_(parameters: Iterable[nn.Parameter], weight_decay: float, trust_coefficient: float = 0.001) -> None:
    """Layer-wise adaptive rate scaling, as SwAV's LARC wrapper (``clip=False``): adds the weight decay to
    each gradient and scales it by η·‖w‖ / (‖g‖ + λ‖w‖) (1 where a norm is 0). Call before a plain
    ``SGD(weight_decay=0)`` step."""
    for param in parameters:
        if param.grad is None:
            continue
        weight_norm, grad_norm = param.norm(), param.grad.norm()
        ratio = trust_coefficient * weight_norm / (grad_norm + weight_decay * weight_norm)
        ratio = torch.where((weight_norm > 0) & (grad_norm > 0), ratio, torch.ones_like(ratio))
        param.grad.add_(param, alpha=weight_decay).mul_(ratio)


OPTIMIZERS = ("lars", "sgd", "adamw")
"""Optimizers of the PASS steps: SGD + LARS (the official runs), plain SGD, AdamW."""


def build_optimizer(parameters: Iterable[nn.Parameter], name: str, lr: float, weight_decay: float
                    ) -> tuple[torch.optim.Optimizer, float | None]:
    """The optimizer ``name`` (one of :data:`OPTIMIZERS`) and the weight decay :func:`fit` must pass to
    :func:`lars_adapt_` (None unless ``"lars"``). SGD has momentum 0.9; with LARS its weight decay moves
    into :func:`lars_adapt_`. AdamW (β = 0.9, 0.999) is for short runs on small data, where LARS's
    layer-wise steps of η·10⁻³·‖w‖ are too small to learn in a few hundred iterations."""
    parameters = list(parameters)
    if name == "lars":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=0.0), weight_decay
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=weight_decay), None
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay), None
    raise ValueError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")


def save_checkpoint(state: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary file renamed into place (:func:`course_lib.cli.save_atomic`): a crash
    never leaves half a checkpoint."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_atomic(state, path)


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict:
    """A checkpoint saved by :func:`save_checkpoint` (on CPU), with a clear error when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; run the step that writes it first")
    return torch.load(path, map_location="cpu", weights_only=True)   # a run folder can come from anywhere


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
        compute_losses: Callable[[dict, int], dict[str, torch.Tensor]], *, epochs: int, schedule: list[float],
        processes: DistContext, checkpoint_path: str | Path, config: dict, seed: int,
        lars_weight_decay: float | None = None, after_backward: Callable[[int], None] | None = None,
        on_epoch_start: Callable[[int], None] | None = None, on_epoch_end: Callable[[int], None] | None = None,
        max_steps: int | None = None, desc: str = "train") -> list[dict]:
    """The training loop of every PASS step, resuming from ``checkpoint_path`` when it exists.

    Each step sets the learning rate from ``schedule``, computes ``compute_losses(batch, iteration)``
    (a dict whose ``"loss"`` is minimised; under bf16 autocast on CUDA), back-propagates, calls ``after_backward(iteration)``,
    applies LARS when ``lars_weight_decay`` is given, and steps. After every epoch rank 0 writes the
    checkpoint (``model`` (unwrapped), ``optimizer``, ``epoch``, per-step ``history``, ``config``).
    ``max_steps`` stops early, saving a checkpoint of the unfinished epoch (under ``COURSE_SMOKE`` at
    most 2 steps). Returns the history.
    """
    checkpoint_path = Path(checkpoint_path)
    core = unwrap(model)
    start_epoch, history = 0, []
    if checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path)
        core.load_state_dict(state["model"])
        if "optimizer" in state:  # shipped checkpoints keep the weights only
            optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"], state["history"]
    max_steps = cap_steps(len(loader) * max(epochs - start_epoch, 0), max_steps)
    bf16 = processes.device.type == "cuda"
    steps_done = 0
    for epoch in range(start_epoch, epochs):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        set_epoch(loader, epoch, seed)
        model.train()
        bar = progress(loader, desc=f"{desc} {epoch + 1}/{epochs}", leave=False,
                       **({} if processes.is_main else {"disable": True}))
        for step, batch in enumerate(bar):
            iteration = epoch * len(loader) + step
            for group in optimizer.param_groups:
                group["lr"] = schedule[iteration]
            with torch.autocast(processes.device.type, dtype=torch.bfloat16, enabled=bf16):
                losses = compute_losses(batch, iteration)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if after_backward is not None:
                after_backward(iteration)
            if lars_weight_decay is not None:
                lars_adapt_(model.parameters(), lars_weight_decay)
            optimizer.step()
            history.append({"epoch": epoch, "step": iteration, "lr": schedule[iteration],
                            **{name: value.item() for name, value in losses.items()}})
            steps_done += 1
            if max_steps is not None and steps_done >= max_steps:
                break
        stop = max_steps is not None and steps_done >= max_steps
        finished = not stop or step == len(loader) - 1
        if processes.is_main:
            save_checkpoint({"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                             "epoch": epoch + 1 if finished else epoch, "history": history, "config": config},
                            checkpoint_path)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
        if stop:
            break
    return history
