"""Looking inside the loss (lesson 03): correspondences of self / kNN / random pairs against the labels.

:func:`pair_correspondences` computes, for every image of a set and one partner per pair kind (itself,
a kNN partner from ranks 1..7, a random other image), the correspondence of the full patch grids, and
which entries join two patches of the same class. Applied to backbone features (spatially centred, the
loss's target F) it shows where the shifts b cut; applied to a head's codes (S) it shows what training
did.
"""
from __future__ import annotations

from dataclasses import dataclass

from dataclasses import replace

import torch

from .configs import StegoConfig
from .correlation import feature_correspondence
from .pairs import derangement, draw_positives

PAIR_KINDS = ("self", "knn", "rand")


@dataclass
class PairCorrespondences:
    """Flat correspondence values of one pair kind and, per value, whether both patches are labelled
    with the same class (entries touching an unlabelled or mixed patch are left out)."""

    values: torch.Tensor
    same_class: torch.Tensor

    def attracted_share(self, shift: float) -> float:
        """Share of entries above the shift b (the loss pulls their codes together)."""
        return float((self.values > shift).float().mean())

    def same_class_precision(self, shift: float) -> float:
        """Among the entries above b, the share that join two patches of the same class (NaN if none)."""
        above = self.values > shift
        return float(self.same_class[above].float().mean()) if above.any() else float("nan")


def partners(table: torch.Tensor, kind: str, num_neighbors: int = 7,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The partner of every image for a pair kind: itself, a kNN partner, or a random other image."""
    n = len(table)
    if kind == "self":
        return torch.arange(n)
    if kind == "knn":
        return draw_positives(table, torch.arange(n), num_neighbors, generator)
    if kind == "rand":
        return derangement(n, generator)
    raise ValueError(f"unknown pair kind {kind!r}; use one of {PAIR_KINDS}")


@torch.no_grad()
def pair_correspondences(maps: torch.Tensor, patch_classes: torch.Tensor | None, table: torch.Tensor,
                         pointwise: bool = True, seed: int = 0) -> dict[str, PairCorrespondences]:
    """Correspondences of every image with its self / kNN / random partner, split by class agreement.

    Args:
        maps: N×C×h×w features (or codes).
        patch_classes: N×h×w class of each patch (``-1``: unlabelled or mixed; e.g. from
            :func:`course_lib.models.feature_correspondences.patch_labels`); ``None`` for unlabelled
            images (every entry kept, ``same_class`` all False).
        table: the N×k kNN table of the images.
        pointwise: spatially centre the correspondences (as the loss does with the features).
    """
    if patch_classes is None:
        patch_classes = torch.zeros(maps.shape[0], *maps.shape[2:], dtype=torch.long)
        unlabelled = True
    else:
        unlabelled = False
    if maps.shape[0] != patch_classes.shape[0] or maps.shape[2:] != patch_classes.shape[1:]:
        raise ValueError(f"maps {tuple(maps.shape)} and patch classes {tuple(patch_classes.shape)} must be "
                         "N×C×h×w and N×h×w")
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for kind in PAIR_KINDS:
        other = partners(table, kind, generator=generator)
        correlation = feature_correspondence(maps.float(), maps[other].float(), pointwise)
        first = patch_classes[:, :, :, None, None]
        second = patch_classes[other][:, None, None, :, :]
        known = (first >= 0) & (second >= 0)
        same = (first == second).expand_as(known) & (not unlabelled)
        result[kind] = PairCorrespondences(correlation[known], same[known])
    return result


def shifts_for_shares(pairs: dict[str, PairCorrespondences], shares: dict[str, float]) -> dict[str, float]:
    """The shift b of each pair kind that attracts the given share of its entries (the (1 − share)-quantile
    of its correspondences): a way to place b on a new backbone's correspondence distribution."""
    result = {}
    for kind, share in shares.items():
        if not 0 < share < 1:
            raise ValueError(f"the attracted share of {kind} pairs must be in (0, 1), got {share}")
        values = pairs[kind].values.float()
        sample = values[torch.randperm(len(values), generator=torch.Generator().manual_seed(0))[:1_000_000]]
        result[kind] = float(torch.quantile(sample, 1 - share))
    return result


@torch.no_grad()
def calibrate_shifts(config: StegoConfig, features: torch.Tensor, table: torch.Tensor, n_images: int = 256,
                     seed: int = 0) -> StegoConfig:
    """``config`` with b_self, b_knn, b_rand set from its ``attracted_shares`` (unchanged if those are None).

    For the first ``n_images`` training images (N×C×h×w ``features``, kNN ``table`` over all N), the
    (spatially centred when ``config.pointwise``) correspondences with themselves, with a kNN partner and
    with a random other image are computed; each b is the quantile of its kind that leaves the given share
    of entries above it. Deterministic for a given seed.
    """
    if config.attracted_shares is None:
        return config
    pairs = training_pair_correspondences(config, features, table, n_images, seed)
    shifts = shifts_for_shares(pairs, dict(zip(PAIR_KINDS, config.attracted_shares)))
    return replace(config, b_self=shifts["self"], b_knn=shifts["knn"], b_rand=shifts["rand"])


@torch.no_grad()
def training_pair_correspondences(config: StegoConfig, features: torch.Tensor, table: torch.Tensor,
                                  n_images: int = 256, seed: int = 0) -> dict[str, PairCorrespondences]:
    """The (spatially centred when ``config.pointwise``) correspondences F of the first ``n_images`` of N×C×h×w
    ``features`` with themselves, a kNN partner (ranks 1..``num_neighbors`` of the N×k ``table``) and a random
    other one of them, flattened per pair kind (no labels: ``same_class`` empty). Deterministic for a seed."""
    n = min(n_images, len(features))
    if n < 2:
        raise ValueError("the correspondences of self / kNN / random pairs need at least 2 training images")
    generator = torch.Generator().manual_seed(seed)
    index = torch.arange(n)
    partner_of = {"self": index, "knn": draw_positives(table, index, config.num_neighbors, generator),
                  "rand": index[derangement(n, generator)]}
    own = features[index].float()
    return {kind: PairCorrespondences(feature_correspondence(own, features[other].float(), config.pointwise).flatten(),
                                      torch.zeros(0, dtype=torch.bool))
            for kind, other in partner_of.items()}


@torch.no_grad()
def attracted_shares(config: StegoConfig, features: torch.Tensor, table: torch.Tensor, n_images: int = 256,
                     seed: int = 0) -> dict[str, float]:
    """Share of the entries of each pair kind's F (:func:`training_pair_correspondences`) above its shift b,
    i.e. the pairs of patches the loss pulls together: ``{"self", "knn", "rand"}`` in [0, 1]. Label-free: a
    share near 1 for random pairs attracts almost everything (collapse), near 0 for self pairs nothing."""
    pairs = training_pair_correspondences(config, features, table, n_images, seed)
    shifts = {"self": config.b_self, "knn": config.b_knn, "rand": config.b_rand}
    return {kind: pairs[kind].attracted_share(shifts[kind]) for kind in PAIR_KINDS}


@torch.no_grad()
def mean_pairwise_cosine(maps: torch.Tensor, n_points: int = 2000, seed: int = 0) -> float:
    """Mean cosine similarity between ``n_points`` random positions of N×C×h×w maps (across images):
    near 1 when the codes have collapsed onto one direction."""
    points = maps.float().permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
    sample = points[torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))[:n_points]]
    sample = torch.nn.functional.normalize(sample, dim=1)
    similarity = sample @ sample.T
    return float((similarity.sum() - similarity.diagonal().sum()) / (len(sample) * (len(sample) - 1)))
