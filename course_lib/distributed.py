"""One process or many: joining torchrun's process group, shared by every training CLI of the course.

Under ``torchrun --nproc_per_node N`` each process reads ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` from
the environment, joins the group (NCCL on CUDA, gloo on CPU) and, on CUDA, takes GPU ``LOCAL_RANK``.
Launched plainly, it is process 0 of 1 and nothing is initialised.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .config import get_device


@dataclass
class DistContext:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_distributed(device: str | torch.device | None = None) -> DistContext:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1; else a single-process context on ``device``
    (default :func:`course_lib.config.get_device`)."""
    chosen = get_device(str(device) if device is not None else None)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistContext(0, 1, chosen)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), chosen)
