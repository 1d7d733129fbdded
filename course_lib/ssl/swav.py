"""SwAV: swapping assignments between views (Caron et al., NeurIPS 2020), in our own code.

Every crop x_v of an image gives an L2-normalised embedding z_v (B×D) and its scores against K
L2-normalised prototypes c_k, z_v·C^T (B×K). The codes q of a few crops ("crops for assign") are the
Sinkhorn-Knopp solution of an entropy-regularised equipartition problem (SwAV §3.1, "online
clustering"):

    Q* = Diag(u) exp(C^T Z / ε) Diag(v),   rows of Q (prototypes) summing to 1/K and columns (samples)
    to 1/B, found by alternating the two normalisations ``iterations`` times (ε = 0.05, 3 iterations);

and every other crop predicts them (the swapped prediction, eq. 1-2):

    ℓ(z_t, q_s) = - Σ_k q_s,k log softmax(z_t·C^T / τ)_k,   τ = 0.1.

Codes are computed without gradient, in the log domain (see :func:`sinkhorn`). Small batches are padded
with a queue of embeddings of earlier batches (started after ``epoch_queue_starts`` epochs), and the
prototypes receive no gradient during the first ``freeze_prototypes_niters`` iterations; both as in the
official code (facebookresearch/swav).

Mixed precision: a training loop may run its forward pass under bf16 autocast (on CUDA); Sinkhorn works
in float64 and returns float32 codes for half-precision scores, and every loss decorated with
:func:`float32_loss` (this module's and PASS's) computes in float32, autocast off.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

LossFunction = TypeVar("LossFunction", bound=Callable[..., torch.Tensor])


def _to_float32(value: Any) -> Any:
    """Floating-point tensors (also inside lists and tuples) as float32; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(item) for item in value)
    return value


def _device_type(values: Sequence[Any]) -> str:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value.device.type
        if isinstance(value, (list, tuple)) and value:
            return _device_type(value)
    return "cpu"


def float32_loss(function: LossFunction) -> LossFunction:
    """Decorator of a loss: its floating-point tensor arguments (also in lists) are cast to float32 and it
    runs with autocast off, so that a bf16 forward pass (autocast on CUDA) never reaches the loss's
    log-softmax, cosines or matrix products in bf16. Gradients flow back through the casts."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        args, kwargs = _to_float32(args), {key: _to_float32(value) for key, value in kwargs.items()}
        with torch.autocast(_device_type([*args, *kwargs.values()]), enabled=False):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


AllReduce = Callable[[torch.Tensor, str], torch.Tensor]
"""``all_reduce(tensor, op)`` with op ``"sum"`` or ``"max"``: the reduced tensor (identity on one process)."""


def _local(tensor: torch.Tensor, op: str) -> torch.Tensor:
    return tensor


def _across_processes(tensor: torch.Tensor, op: str) -> torch.Tensor:
    reduced = tensor.clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return reduced


def _log_sum(log_values: torch.Tensor, dim: int | None, all_reduce: AllReduce) -> torch.Tensor:
    """log Σ exp(log_values) over ``dim`` (None: all) and over the processes of ``all_reduce``,
    subtracting the maximum before exponentiating."""
    local = log_values.reshape(-1) if dim is None else log_values
    peak = all_reduce(local.amax(dim=0 if dim is None else dim, keepdim=True), "max")
    total = all_reduce(torch.exp(local - peak).sum(dim=0 if dim is None else dim, keepdim=True), "sum")
    return peak + torch.log(total)


def _sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int, all_reduce: AllReduce,
              world_size: int) -> torch.Tensor:
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"sinkhorn expects a non-empty B×K score matrix, got shape {tuple(scores.shape)}")
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    with torch.no_grad():
        log_q = scores.detach().double().t() / epsilon  # K×B, the paper's notation
        n_prototypes, n_samples = log_q.shape[0], log_q.shape[1] * world_size
        log_q = log_q - _log_sum(log_q, None, all_reduce)  # Q /= ΣQ
        for _ in range(iterations):
            log_q = log_q - _log_sum(log_q, 1, all_reduce) - math.log(n_prototypes)  # prototype mass 1/K
            log_q = log_q - _log_sum(log_q, 0, _local) - math.log(n_samples)  # sample mass 1/B
        codes = torch.exp(log_q + math.log(n_samples)).t()  # columns sum to 1
        return codes.to(torch.promote_types(scores.dtype, torch.float32))


def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV's Sinkhorn-Knopp on one process: B×K scores z·C^T → B×K codes Q (each row sums to 1).

    Alternates normalising the prototypes' total mass to 1/K and each sample's to 1/B, starting from
    exp(scores / ε); more iterations approach an exact equipartition of the B samples over the K
    prototypes. Computed in float64 in the log domain (every sum a log-sum-exp that subtracts the
    maximum before exponentiating): the official result wherever that one is finite, and neither
    overflow nor 0/0 for large scores or a small ε. Returns the dtype of ``scores`` (float32 for bf16 or
    float16 scores: codes stay in full precision under autocast), without gradient.
    """
    return _sinkhorn(scores, epsilon, iterations, _local, 1)


def distributed_sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """:func:`sinkhorn` over the union of every process's batch (``torch.distributed`` initialised):
    the sums over samples are ``all_reduce``-d, so the equipartition holds across all B·world samples.
    Falls back to :func:`sinkhorn` when no process group is initialised."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return sinkhorn(scores, epsilon, iterations)
    return _sinkhorn(scores, epsilon, iterations, _across_processes, dist.get_world_size())


class Prototypes(nn.Module):
    """K prototype vectors C (K×D, rows kept on the unit sphere): z (B×D) → scores z·C^T (B×K)."""

    def __init__(self, dim: int, n_prototypes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_prototypes, dim))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # nn.Linear's default initialisation
        self.normalize_()

    @torch.no_grad()
    def normalize_(self) -> None:
        """Project every prototype back onto the unit sphere (done before every training step)."""
        self.weight.copy_(F.normalize(self.weight, dim=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight.t()


@float32_loss
def swapped_prediction_loss(scores: Sequence[torch.Tensor], codes: Sequence[torch.Tensor],
                            crops_for_assign: Sequence[int], temperature: float = 0.1) -> torch.Tensor:
    """SwAV's loss (eq. 1): every crop v ≠ s predicts the codes q_s of each assigned crop s.

    ``scores[v]`` is B×K (crop v's z·C^T), ``codes[i]`` the B×K codes of crop ``crops_for_assign[i]``;
    the cross-entropy -Σ_k q_s,k log softmax(scores_v / τ)_k is averaged over the batch, over the other
    crops and over the assigned crops.
    """
    if len(codes) != len(crops_for_assign):
        raise ValueError(f"{len(codes)} code tensors for {len(crops_for_assign)} assigned crops")
    if len(scores) < 2:
        raise ValueError("the swapped prediction needs at least two crops")
    log_probs = [F.log_softmax(s / temperature, dim=1) for s in scores]
    total = scores[0].new_zeros(())
    for q, crop in zip(codes, crops_for_assign):
        others = [v for v in range(len(scores)) if v != crop]
        total = total + sum(-(q * log_probs[v]).sum(dim=1).mean() for v in others) / len(others)
    return total / len(crops_for_assign)


class SwAVQueue:
    """Embeddings of earlier batches, one FIFO per assigned crop (n_assign×L×D), used to pad the
    Sinkhorn batch once it is full (SwAV's ``queue``; its length is a multiple of the batch size)."""

    def __init__(self, n_assign: int, length: int, dim: int, device: torch.device | str = "cpu"):
        if length < 1:
            raise ValueError(f"queue length must be positive, got {length}")
        self.embeddings = torch.zeros(n_assign, length, dim, device=device)
        self.in_use = False

    def scores_with_queue(self, index: int, scores: torch.Tensor, prototypes: Prototypes) -> torch.Tensor:
        """B×K scores of assigned crop ``index``, preceded by the queue's scores (L×K) once it is full."""
        if not self.in_use and bool(self.embeddings[index, -1].any()):
            self.in_use = True
        if not self.in_use:
            return scores
        return torch.cat([prototypes(self.embeddings[index]), scores])

    @torch.no_grad()
    def push(self, index: int, embeddings: torch.Tensor) -> None:
        """Insert the B×D embeddings of assigned crop ``index`` at the front, dropping the oldest."""
        batch = embeddings.shape[0]
        self.embeddings[index, batch:] = self.embeddings[index, :-batch].clone()
        self.embeddings[index, :batch] = embeddings.detach()

    def state_dict(self) -> dict:
        return {"embeddings": self.embeddings.cpu(), "in_use": self.in_use}

    def load_state_dict(self, state: dict) -> None:
        self.embeddings = state["embeddings"].to(self.embeddings.device)
        self.in_use = bool(state["in_use"])


def swav_codes(embeddings: Sequence[torch.Tensor], scores: Sequence[torch.Tensor], prototypes: Prototypes,
               crops_for_assign: Sequence[int], queue: SwAVQueue | None = None, epsilon: float = 0.05,
               iterations: int = 3) -> list[torch.Tensor]:
    """The B×K codes q of each assigned crop: Sinkhorn over its scores (padded with the queue's, which
    the batch then enters), keeping the batch's rows. ``embeddings[v]`` / ``scores[v]``: crop v, B×D / B×K."""
    codes = []
    for index, crop in enumerate(crops_for_assign):
        with torch.no_grad():
            batch_scores = scores[crop].detach()
            if queue is not None:
                batch_scores = queue.scores_with_queue(index, batch_scores, prototypes)
                queue.push(index, embeddings[crop])
            codes.append(distributed_sinkhorn(batch_scores, epsilon, iterations)[-scores[crop].shape[0]:])
    return codes


def freeze_prototypes_if_early(prototypes: Prototypes, iteration: int, freeze_iterations: int) -> bool:
    """Drop the prototypes' gradient during the first ``freeze_iterations`` iterations (call between
    ``backward`` and ``step``); True when frozen."""
    frozen = iteration < freeze_iterations
    if frozen:
        prototypes.weight.grad = None
    return frozen
