"""Checks of lesson 02 (STEGO's correspondence tensor F of eq. 1, the AUROC as a probability over pairs, the
same-class gap of a random and a self-supervised backbone, reading STEGO §3.1).

Each check computes its own reference (the course's :func:`course_lib.stego.tensor_correlation`, scikit-learn's
``roc_auc_score``, an exact mean over every pair of labelled patches, eq. 1's shape), never a value stored from the
solution.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from ..stego.correlation import tensor_correlation
from . import call_learner, expect, expect_close, passed, require_done

_TENSOR = "exercise 1 (the correspondence tensor F, eq. 1)"
_AUROC = "exercise 2 (the AUROC, counted over pairs)"
_GAP = "exercise 3 (the same-class gap, random vs self-supervised)"
_PAPER = "exercise 4 (reading STEGO §3.1)"
_CHUNK = 16   # images per step of same_class_gap

SECTION_3_1_CLAIMS = {
    "a": "feature correspondences predict whether two pixels have similar colours",
    "b": "feature correspondences predict whether two pixels belong to the same class (class co-occurrence)",
    "c": "feature correspondences predict whether two pixels are close in the image",
    "d": "feature correspondences predict whether two pixels belong to the same object instance",
}
"""The choices of exercise 4. STEGO's §3.1 is titled "Feature Correspondences Predict Class Co-occurrence"
(Hamilton et al., ICLR 2022, p. 3, with eq. 1); the official ``src/plot_pr_curves.py:108-119``
(``mhamilton723/STEGO``) scores the correspondences of DINO, STEGO and MoCoV2 features against the label
co-occurrence ``ld`` (``tensor_correlation`` of one-hot labels) at the same sampled points."""


def check_correspondence(correspondence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Checks ``correspondence(f, g)``: feature maps f (B×C×H×W) and g (B×C×I×J) → the B×H×W×I×J tensor
    F_hwij = f_hw · g_ij / (|f_hw| |g_ij|) (STEGO eq. 1), per image pair of the batch.

    Reference: :func:`course_lib.stego.tensor_correlation` on random maps with H×W ≠ I×J (a transposed result has
    the wrong shape), scaled differently per position (so a missing normalisation, or one over the wrong
    dimension, is off) and with one all-zero feature vector (its row of F must be 0, not NaN).
    """
    generator = torch.Generator().manual_seed(2)
    f = torch.randn(2, 5, 3, 4, generator=generator) * torch.rand(2, 1, 3, 4, generator=generator).add(0.5) * 3
    g = torch.randn(2, 5, 6, 2, generator=generator) * torch.rand(2, 1, 6, 2, generator=generator).add(0.5)
    f[1, :, 2, 3] = 0.0                                                  # a position with no feature at all
    result = torch.as_tensor(call_learner(correspondence, f.clone(), g.clone(), what=_TENSOR))
    reference = tensor_correlation(f, g)
    expect(tuple(result.shape) == tuple(reference.shape), _TENSOR,
           f"shape {tuple(result.shape)}, expected B×H×W×I×J = {tuple(reference.shape)}: one value per position hw "
           "of f and position ij of g, f's positions first")
    expect(bool(torch.isfinite(result).all()), _TENSOR,
           "NaN or inf where f has an all-zero feature vector: normalise with F.normalize(·, dim=1) (it divides by "
           "max(|x|, eps)), so that position correlates 0 with everything")
    expect_close(result, reference, _TENSOR, rtol=1e-4, atol=1e-5,
                 hint="normalise each feature vector along C (dim 1) to unit length, then "
                      "torch.einsum('bchw,bcij->bhwij', f, g)")
    passed(_TENSOR, f"matches course_lib.stego.tensor_correlation, shape {tuple(reference.shape)}, values in [−1, 1]")


def check_auroc(pairwise_auroc: Callable[[np.ndarray, np.ndarray], float]) -> None:
    """Checks ``pairwise_auroc(pos, neg)``: similarities of same-class pairs (P) and of different-class pairs (Q)
    → 100 · P(a random same-class pair is more similar than a random different-class pair), a tie counting one
    half (the Mann–Whitney form of the AUROC).

    Reference: ``100 · sklearn.metrics.roc_auc_score`` on the labelled union, on continuous scores and on
    scores rounded to one decimal (many ties, so forgetting the half for ties is off).
    """
    generator = np.random.default_rng(3)
    for decimals in (None, 1):
        pos = generator.normal(0.4, 0.3, 300)
        neg = generator.normal(0.1, 0.3, 700)
        if decimals is not None:
            pos, neg = pos.round(decimals), neg.round(decimals)
        value = float(require_done(call_learner(pairwise_auroc, pos.copy(), neg.copy(), what=_AUROC), _AUROC))
        scores = np.concatenate([pos, neg])
        same = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
        reference = 100 * roc_auc_score(same, scores)
        where = "with ties (scores rounded to 0.1)" if decimals is not None else "on continuous scores"
        expect(not (1 < reference < 99 and abs(value - reference / 100) < 1e-3), _AUROC,
               f"{value:.4f} {where}: the AUROC is reported in percent (× 100), as in section 2's table")
        expect_close(value, reference, _AUROC + f" {where}", rtol=1e-6, atol=1e-6,
                     hint="compare every same-class similarity with every different-class one, "
                          "(pos[:, None] > neg[None, :]), count a tie (==) as one half, take the mean, × 100")
    passed(_AUROC, "equals 100 · roc_auc_score, ties included: the AUROC is a probability over pairs")


def same_class_gap(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact mean cosine similarity of same-class minus different-class patch pairs from two different images.

    Args:
        features: N×C×h×w patch features. labels: N×h×w patch classes (``-1``: left out), e.g. from
            :func:`course_lib.models.feature_correspondences.patch_labels`.
    Returns:
        mean_{same class} u_p·u_q − mean_{different class} u_p·u_q over ALL pairs (p, q) of labelled patches of
        two different images (u: unit features). With sums of unit features per (image, class), S_nc, each sum
        over pairs is a squared norm: Σ_{p,q in different images, class c} u_p·u_q = |Σ_n S_nc|² − Σ_n |S_nc|².
    """
    n, channels = features.shape[:2]
    flat = labels.reshape(n, -1).long()
    n_classes = int(flat.max()) + 1
    one_hot = F.one_hot(flat.clamp(min=0), n_classes).float() * (flat >= 0)[..., None]    # N×P×K
    sums = torch.cat([                                                                  # S_nc: N×K×C
        torch.einsum("npk,npc->nkc", one_hot[start:start + _CHUNK],
                     F.normalize(features[start:start + _CHUNK].float(), dim=1).flatten(2).transpose(1, 2))
        for start in range(0, n, _CHUNK)]).double()                 # in chunks: full-profile maps are large
    counts = one_hot.sum(1).double()                                                    # N×K

    def cross_image(per_image_sums: torch.Tensor, per_image_counts: torch.Tensor) -> tuple[float, float]:
        total = per_image_sums.sum(0).square().sum() - per_image_sums.square().sum()
        pairs = per_image_counts.sum(0).square().sum() - per_image_counts.square().sum()
        return float(total), float(pairs)

    same_sum, same_pairs = cross_image(sums, counts)
    all_sum, all_pairs = cross_image(sums.sum(1, keepdim=True), counts.sum(1, keepdim=True))
    return same_sum / same_pairs - (all_sum - same_sum) / (all_pairs - same_pairs)


def check_gap(prediction: str, gaps: Mapping[str, float], features: Mapping[str, torch.Tensor],
              labels: torch.Tensor) -> None:
    """Predict-then-measure: ``prediction`` names the backbone the learner expected to show the larger same-class
    gap across images (a key of ``gaps``); ``gaps`` maps "random ViT" and the self-supervised backbone's name to
    the measured gap, mean cosine of same-class pairs minus mean cosine of different-class pairs, for patches of
    two different images; ``features`` holds the N×C×h×w features under the same names, ``labels`` the N×h×w
    patch classes.

    Reference: :func:`same_class_gap`, exact over all pairs (the learner's estimate from 20 000 sampled pairs must
    be within 0.02 of it). The prediction is compared and reported, not required to be right.
    """
    guess = require_done(prediction, _GAP + ": your prediction")
    gaps = require_done(gaps, _GAP + ": the measured gaps")
    expect(isinstance(gaps, Mapping) and "random ViT" in gaps and len(gaps) == 2, _GAP,
           f"gaps must be a dict with two entries, 'random ViT' and the self-supervised backbone, got {gaps!r}")
    expect(guess in gaps, _GAP, f"prediction {guess!r} must be one of {list(gaps)}")
    reference = {}
    for name, value in gaps.items():
        require_done(value, _GAP + f": the gap of {name}")
        expect(name in features, _GAP, f"{name!r} is not a key of `features` ({list(features)})")
        reference[name] = same_class_gap(features[name], labels)
        expect_close(float(value), reference[name], _GAP + f": {name}", rtol=0.0, atol=0.02,
                     hint="same_class_scores(features[name], grid_labels, N_PAIRS, within_image=False, seed=SEED) "
                          "gives (similarity, same); the gap is similarity[same].mean() − similarity[~same].mean()")
    larger = max(reference, key=reference.get)
    verdict = "right" if guess == larger else "not what happened"
    passed(_GAP, ", ".join(f"{name} {reference[name]:+.3f}" for name in reference)
           + f" (exact over all pairs); your prediction ({guess}) was {verdict}")


def check_paper(claim: str, entries: int) -> None:
    """Reading STEGO §3.1: ``claim`` is the letter of :data:`SECTION_3_1_CLAIMS` that states the section's claim;
    ``entries`` the number of entries of eq. 1's F for ONE pair of 320×320 images (STEGO's evaluation size) through
    ViT-S/8. Reference: the section's title, and the shape of :func:`course_lib.stego.tensor_correlation` on two
    1×1×(320/8)×(320/8) maps. The 11×11 training grids the success message names are the official
    ``feature_samples: 11`` (``mhamilton723/STEGO``, ``src/configs/train_config.yml:51``)."""
    letter = str(require_done(claim, _PAPER + ": the claim")).strip().lower().strip("()")
    count = require_done(entries, _PAPER + ": the entries of F")
    expect(letter in SECTION_3_1_CLAIMS, _PAPER, f"claim {claim!r}: answer with one of {sorted(SECTION_3_1_CLAIMS)}")
    expect(letter == "b", _PAPER, f"({letter}) {SECTION_3_1_CLAIMS[letter]}: not §3.1's claim; read its title, and "
                                  "what section 2 of this lesson measures")
    grid = 320 // 8
    shape = tensor_correlation(torch.ones(1, 1, grid, grid), torch.ones(1, 1, grid, grid)).shape
    reference = int(np.prod(shape))
    expect(int(count) != grid ** 2, _PAPER, f"{count} entries is H·W, one image's positions: F pairs every position "
                                            "hw of f with every position ij of g")
    expect(int(count) == reference, _PAPER, f"{count} entries; F is H×W×I×J with H = W = I = J = 320/8")
    passed(_PAPER, f"(b) class co-occurrence; F has {reference:,} entries per image pair (40⁴), "
                   f"{4 * reference / 2 ** 20:.1f} MiB in float32: why STEGO samples 11×11 grids to train")
