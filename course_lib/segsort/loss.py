"""The segment-sorting losses of SegSort (Hwang et al., ICCV 2019, Sec. 3, "segment sorting").

Every pixel embedding e_i (unit length) is scored against every segment prototype μ_s of the batch with
the von Mises-Fisher log-likelihood up to a constant, κ · μ_sᵀ e_i (concentration κ = 10). The
probability that pixel i belongs to segment s is a softmax over segments:

    p(s | e_i) = exp(κ μ_sᵀ e_i) / Σ_t exp(κ μ_tᵀ e_i)

- **Unsupervised**: the positive is the pixel's own region of a precomputed over-segmentation
  (HED-owt-ucm in the paper, superpixels here, see :mod:`.priors`); every other region of the batch, in
  the same image or another, is a negative. Loss = mean over pixels of -log p(own region | e_i).
- **Supervised** (neighbourhood components analysis): segments are split by ground-truth class;
  the numerator sums over all *other* segments of the pixel's class (leave-one-out; the pixel's own
  segment when no other segment of its class exists), the denominator over those plus every segment of
  another class. Prototypes of the two previous batches (:class:`PrototypeMemory`) join as extra
  segments, as the official code's memory banks (a random 25·B of them, see :meth:`PrototypeMemory.official`).

Prototypes come from the current batch and are differentiable. Everything is computed in log space
(``log_softmax`` / ``logsumexp``), never exp-then-divide.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .vmf import EPS, batch_segment_ids, segment_prototypes

CONCENTRATION = 10.0


def _valid_pixels(embeddings: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit embeddings (P×D) and ids (P) of the pixels whose id is not -1."""
    pixels = F.normalize(embeddings, dim=1, eps=EPS).permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1])
    flat = ids.reshape(-1)
    keep = flat >= 0
    return pixels[keep], flat[keep]


def segment_sort_loss(embeddings: torch.Tensor, segments: torch.Tensor,
                      concentration: float = CONCENTRATION) -> torch.Tensor:
    """Unsupervised SegSort loss.

    Args:
        embeddings: B×D×H×W pixel embeddings (normalised inside).
        segments: B×H×W per-image region ids of the over-segmentation (-1 = ignored pixel).
        concentration: κ.

    Returns:
        scalar: mean over pixels of -log p(own region | e_i), the softmax running over all regions of the batch.
    """
    ids, _, _ = batch_segment_ids(segments)
    prototypes = segment_prototypes(embeddings, ids)
    pixels, targets = _valid_pixels(embeddings, ids)
    return F.cross_entropy(concentration * pixels @ prototypes.T, targets)


class PrototypeMemory:
    """The prototypes (and classes) of the last ``n_banks`` batches, detached: extra segments for the
    supervised loss (the official ``num_banks = 2``).

    Two behaviours:

    - ``capacity=None`` (the toy preset): a bank holds every prototype of its batch; empty at the start.
    - ``capacity=M`` (:meth:`official`, the full preset): as ``network/segsort/train_utils.py:79-109, 185-189,
      294-323`` of jyhjinghwang/SegSort: each bank is a fixed M×D table (M = 25·B, the grid's cells times
      the batch), filled at the start with random directions (``truncated_normal_initializer``, normalised
      when used) of class 0; each batch stores a random subset of M of its prototypes (``random_shuffle``
      then the first M) and drops the oldest bank. A batch with fewer than M prototypes (where the official
      ``tf.assign`` of a shorter tensor would fail) stores all of them.
    """

    def __init__(self, n_banks: int = 2, capacity: int | None = None):
        if n_banks < 1:
            raise ValueError(f"n_banks must be positive, got {n_banks}")
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be positive or None, got {capacity}")
        self.n_banks, self.capacity = n_banks, capacity
        self.banks: list[tuple[torch.Tensor, torch.Tensor]] = []

    @classmethod
    def official(cls, n_banks: int, capacity: int, embedding_dim: int) -> "PrototypeMemory":
        """Banks of ``capacity`` random unit prototypes of class 0 each (the official initial state)."""
        memory = cls(n_banks, capacity)
        for _ in range(n_banks):
            directions = torch.nn.init.trunc_normal_(torch.empty(capacity, embedding_dim), std=1.0, a=-2.0, b=2.0)
            memory.banks.append((F.normalize(directions, dim=1, eps=EPS), torch.zeros(capacity, dtype=torch.long)))
        return memory

    def __len__(self) -> int:
        return sum(len(classes) for _, classes in self.banks)

    def push(self, prototypes: torch.Tensor, classes: torch.Tensor) -> None:
        """Remember one batch's S×D prototypes and their S classes (a random ``capacity`` of them when
        bounded), forgetting the oldest bank."""
        prototypes, classes = prototypes.detach(), classes.detach()
        if self.capacity is not None:
            keep = torch.randperm(len(classes), device=classes.device)[:self.capacity]
            prototypes, classes = prototypes[keep], classes[keep]
        self.banks = (self.banks + [(prototypes, classes)])[-self.n_banks:]

    def contents(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All remembered prototypes M×D and classes M (empty tensors when nothing is stored)."""
        if not self.banks:
            return like.new_zeros(0, like.shape[1]), torch.zeros(0, dtype=torch.long, device=like.device)
        return (torch.cat([p for p, _ in self.banks]).to(like), torch.cat([c for _, c in self.banks]).to(like.device))

    def state_dict(self) -> dict:
        return {"n_banks": self.n_banks, "capacity": self.capacity,
                "banks": [(p.cpu(), c.cpu()) for p, c in self.banks]}

    def load_state_dict(self, state: dict) -> None:
        self.n_banks, self.capacity, self.banks = state["n_banks"], state.get("capacity"), list(state["banks"])


def split_segments_by_class(segments: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split every segment by ground-truth class (the supervised variant's segments).

    Args:
        segments: B×H×W per-image segment ids (e.g. from :func:`~.vmf.vmf_cluster`), -1 ignored.
        labels: B×H×W class ids, -1 ignored.

    Returns:
        B×H×W batch-wide ids 0..S-1 of the (segment, class) pieces (-1 ignored) and their S classes.
    """
    if segments.shape != labels.shape:
        raise ValueError(f"segments {tuple(segments.shape)} and labels {tuple(labels.shape)} must match")
    n_classes = int(labels.max()) + 1 if (labels >= 0).any() else 1
    pieces = torch.where((segments >= 0) & (labels >= 0), segments.long() * n_classes + labels.long(), -1)
    ids, _, local = batch_segment_ids(pieces)
    return ids, local % n_classes


def supervised_segment_sort_loss(embeddings: torch.Tensor, segments: torch.Tensor, labels: torch.Tensor,
                                 concentration: float = CONCENTRATION,
                                 memory: PrototypeMemory | None = None) -> torch.Tensor:
    """Supervised SegSort loss with the leave-one-out (NCA) numerator and an optional memory bank.

    Args:
        embeddings: B×D×H×W.
        segments: B×H×W per-image segment ids (vMF clusters of the detached embedding in the paper).
        labels: B×H×W ground-truth classes, -1 ignored.
        concentration: κ.
        memory: prototypes of previous batches; the current batch's prototypes are pushed into it.

    Returns:
        scalar: mean over labelled pixels of -log(Σ_same-class others exp(κ μᵀe) / Σ_allowed exp(κ μᵀe)).
    """
    ids, classes = split_segments_by_class(segments, labels)
    prototypes = segment_prototypes(embeddings, ids)
    pixels, own = _valid_pixels(embeddings, ids)
    pixel_classes = classes[own]
    if memory is not None:
        remembered, remembered_classes = memory.contents(prototypes)
        memory.push(prototypes, classes)
        prototypes = torch.cat([prototypes, remembered])
        classes = torch.cat([classes, remembered_classes])
    logits = concentration * pixels @ prototypes.T                                  # P×T
    same = pixel_classes[:, None] == classes[None, :]
    is_own = torch.arange(len(classes), device=own.device)[None, :] == own[:, None]
    positive = same & ~is_own
    positive = torch.where(positive.any(1, keepdim=True), positive, is_own)       # no other: own segment
    allowed = positive | ~same
    numerator = logits.masked_fill(~positive, float("-inf")).logsumexp(1)
    denominator = logits.masked_fill(~allowed, float("-inf")).logsumexp(1)
    return (denominator - numerator).mean()
