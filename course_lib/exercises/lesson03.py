"""Checks of lesson 03 (STEGO's correlation loss of one pair, raising b_rand, the official λ and b).

Each check computes its own reference (the course's :func:`course_lib.stego.correlation_loss` on its own random
tensors, the lesson's pair statistics, the official configuration as :data:`course_lib.stego.OFFICIAL_CONFIGS`
records it from ``mhamilton723/STEGO`` ``src/configs/train_config.yml``), never a value stored from the solution.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..stego import OFFICIAL_CONFIGS, correlation_loss
from ..stego.diagnostics import PairCorrespondences
from . import call_learner, expect, expect_close, passed, require_done

_LOSS = "exercise 1 (STEGO's correlation loss, eq. 2–4)"
_RAISE = "exercise 2 (raise b_rand)"
_READ = "exercise 3 (the official λ and b)"

_DIRECTIONS = ("up", "down", "same")


def _pair_inputs(seed: int) -> tuple[torch.Tensor, ...]:
    """Features 2×6×5×5 / 2×6×4×6 and codes 2×4×5×5 / 2×4×4×6 (different grids for the two images, so that the
    anchor axes hw and the partner axes ij cannot be swapped). The features have a positive offset that differs
    per image (the global mean of F is far from 0 and differs per image); the codes have zero mean (S < 0 often)."""
    generator = torch.Generator().manual_seed(seed)
    offset = torch.tensor([0.5, 1.5]).view(2, 1, 1, 1)
    feats1 = torch.randn(2, 6, 5, 5, generator=generator) + offset
    feats2 = torch.randn(2, 6, 4, 6, generator=generator) + offset
    codes1 = torch.randn(2, 4, 5, 5, generator=generator)
    codes2 = torch.randn(2, 4, 4, 6, generator=generator)
    return feats1, feats2, codes1, codes2


def check_correlation_loss(pair_loss: Callable[..., torch.Tensor]) -> None:
    """Checks ``pair_loss(feats1, feats2, codes1, codes2, shift)`` (features B×C×H×W and B×C×I×J, codes B×D×H×W
    and B×D×I×J) → the scalar ``mean_bhwij −(F^SC − b) · max(S, 0)`` of STEGO eq. 2–4 with the official semantics:
    F and S the cosine correspondences (eq. 1) of the features and of the codes, F^SC = F − mean_ij F + mean(F)
    (spatial centering, the global mean over the whole batch restored: ``mhamilton723/STEGO``
    ``src/modules.py:330-333``), the 0-clamp on the codes' S only (``src/modules.py:337-345``).

    Reference: :func:`course_lib.stego.correlation_loss` (``pointwise=True, zero_clamp=True``) on random tensors
    whose two images have different grids and different feature offsets, at b = 0.3 and b = 0.05.
    """
    for seed, shift in ((3, 0.3), (4, 0.05)):
        inputs = _pair_inputs(seed)
        loss = call_learner(pair_loss, *(t.clone() for t in inputs), shift, what=_LOSS)
        loss = torch.as_tensor(loss)
        expect(loss.numel() == 1, _LOSS, f"one number (the mean over all B·H·W·I·J entries), got shape "
                                         f"{tuple(loss.shape)}")
        reference = correlation_loss(*inputs, shift=shift, pointwise=True, zero_clamp=True)
        expect_close(loss.detach().double().reshape(()), reference.double(), _LOSS + f" (b = {shift:g})",
                     rtol=1e-4, atol=1e-6,
                     hint="normalise features and codes along C; F = einsum('bchw,bcij->bhwij'); "
                          "F_sc = F − F.mean((3, 4), keepdim=True) + F.mean() (the global mean of the whole "
                          "batch); loss = −((F_sc − b) · S.clamp(min=0)).mean() — the clamp on S, not on F")
    passed(_LOSS, f"the same loss as course_lib.stego.correlation_loss at b = 0.3 and b = 0.05 "
                  f"({float(reference):.4f} at b = 0.05)")


def _positive_code_correspondence(codes: torch.Tensor, n_pairs: int = 4000, seed: int = 0) -> float:
    """mean max(S, 0) over ``n_pairs`` random pairs of positions of N×D×h×w ``codes`` in two different images
    (what the random term of the loss acts on)."""
    n, _, h, w = codes.shape
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(0, n, (n_pairs,), generator=generator)
    second = (first + torch.randint(1, n, (n_pairs,), generator=generator)) % n       # another image
    points = codes.float().permute(0, 2, 3, 1).reshape(n, h * w, -1)
    a = points[first, torch.randint(0, h * w, (n_pairs,), generator=generator)]
    b = points[second, torch.randint(0, h * w, (n_pairs,), generator=generator)]
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).clamp(min=0).mean())


def check_raise_b_rand(predicted_share: str, predicted_codes: str, b_rand_values: Sequence[float],
                       attracted: Sequence[float], rand_codes: Sequence[torch.Tensor],
                       rand_pairs: PairCorrespondences) -> None:
    """Predict-then-measure. ``predicted_share`` / ``predicted_codes``: "up", "down" or "same", the learner's
    guesses of what raising b_rand does to the share of random-pair entries the loss attracts, and to the codes'
    positive correspondence max(S, 0) across images after a short training. ``b_rand_values``: the two shifts
    (the toy one, then a larger one); ``attracted``: the measured share of random-pair entries with F^SC > b at
    each; ``rand_codes``: the N×D×h×w validation codes of a head trained with each.

    Reference: the shares recomputed from ``rand_pairs`` (section 4's random-pair statistics,
    :meth:`~course_lib.stego.diagnostics.PairCorrespondences.attracted_share`); mean max(S, 0) of the codes of
    4000 random position pairs in two different images, computed here from ``rand_codes``. The predictions are
    compared and reported, not required to be right.
    """
    for value in (predicted_share, predicted_codes):
        require_done(value, _RAISE + ": your prediction")
        expect(value in _DIRECTIONS, _RAISE + ": your prediction", f"{value!r}: write one of {_DIRECTIONS}")
    b_values = [float(b) for b in require_done(b_rand_values, _RAISE + ": b_rand_values")]
    expect(len(b_values) == 2 and b_values[1] > b_values[0] + 0.05, _RAISE + ": b_rand_values",
           f"{b_values}: two shifts, the toy b_rand first, then a larger one (raise it by 0.1 or more)")
    shares = require_done(attracted, _RAISE + ": attracted")
    expect_close([float(s) for s in shares], [rand_pairs.attracted_share(b) for b in b_values],
                 _RAISE + ": the attracted shares", rtol=1e-4, atol=1e-6,
                 hint="the share of random-pair entries ABOVE b: pairs['rand'].attracted_share(b), i.e. "
                      "(values > b).float().mean() on section 4's centred feature correspondences")
    codes = require_done(rand_codes, _RAISE + ": rand_codes")
    expect(len(codes) == 2 and all(isinstance(c, torch.Tensor) and c.dim() == 4 for c in codes),
           _RAISE + ": rand_codes", "two N×D×h×w code tensors, one per b_rand")
    positive = [_positive_code_correspondence(c) for c in codes]

    def direction(before: float, after: float, tolerance: float) -> str:
        return "same" if abs(after - before) <= tolerance else ("up" if after > before else "down")

    measured_share = direction(*[float(s) for s in shares], tolerance=1e-3)
    measured_codes = direction(*positive, tolerance=0.005)
    verdicts = ["right" if guess == measured else "wrong"
                for guess, measured in ((predicted_share, measured_share), (predicted_codes, measured_codes))]
    passed(_RAISE, f"b_rand {b_values[0]:.3f} → {b_values[1]:.3f}: attracted random entries "
                   f"{100 * shares[0]:.2f} % → {100 * shares[1]:.2f} % ({measured_share}; your prediction was "
                   f"{verdicts[0]}); mean max(S, 0) of the codes across images {positive[0]:.3f} → {positive[1]:.3f} "
                   f"({measured_codes}; your prediction was {verdicts[1]})")


_NAMES = ("lambda_self", "lambda_knn", "lambda_rand", "b_self", "b_knn", "b_rand")
_ACTIVE_IAROA_BLOCK = {"b_self": 0.18, "b_knn": 0.12, "b_rand": 0.46}
"""The uncommented block of ``train_config.yml:58-64`` ("IAROA vit small 1/31/22"), not CocoStuff's."""


def check_official_hyperparameters(cocostuff: dict, cityscapes: dict) -> None:
    """Reading the official code: ``cocostuff`` and ``cityscapes`` map ``lambda_self, lambda_knn, lambda_rand,
    b_self, b_knn, b_rand`` to the values of STEGO's ``src/configs/train_config.yml`` for CocoStuff-27 with
    ViT-S/8 (block "Cocostuff27 vit small 1/31/22", lines 74-80) and Cityscapes with ViT-B/8 (block
    "Cityscapes 10/3", lines 126-134), where ``pos_intra_* → self``, ``pos_inter_* → knn``,
    ``neg_inter_* → rand`` (``*_weight`` = λ, ``*_shift`` = b).

    Reference: :data:`course_lib.stego.OFFICIAL_CONFIGS` (pinned by
    ``tests/test_stego.py::test_official_configs_hold_the_published_values``); a value counts when it is
    within 0.006 of the official one (two decimals suffice).
    """
    for name, answer, key in (("CocoStuff-27, ViT-S/8", cocostuff, ("cocostuff27", "dino_vits8")),
                              ("Cityscapes, ViT-B/8", cityscapes, ("cityscapes27", "dino_vitb8"))):
        what = f"{_READ}: {name}"
        answer = require_done(answer, what)
        expect(isinstance(answer, dict), what, f"a dict with the keys {_NAMES}, got {type(answer).__name__}")
        for value in answer.values():
            require_done(value, what)
        missing = [k for k in _NAMES if k not in answer]
        expect(not missing, what, f"missing {missing}; the keys are {_NAMES}")
        official = OFFICIAL_CONFIGS[key]
        if name.startswith("CocoStuff"):
            expect(any(abs(float(answer[k]) - v) > 0.006 for k, v in _ACTIVE_IAROA_BLOCK.items()), what,
                   "these shifts are the uncommented block at the top (\"IAROA vit small\"); CocoStuff's block "
                   "is commented out further down")
        for k in _NAMES:
            reference = getattr(official, k)
            swapped = {"self": "knn", "knn": "self"}
            term = k.split("_")[1]
            hint = (f"pos_intra_* is the self term, pos_inter_* the kNN term, neg_inter_* the random term"
                    if term in swapped and abs(float(answer[k]) - getattr(official, k.replace(term, swapped[term])))
                    <= 0.006 else f"read the {'*_weight' if k.startswith('lambda') else '*_shift'} line of the "
                                  f"block again")
            expect(abs(float(answer[k]) - reference) <= 0.006, what, f"{k} = {answer[k]} is not the official "
                                                                       f"value; {hint}")
    coco, city = OFFICIAL_CONFIGS["cocostuff27", "dino_vits8"], OFFICIAL_CONFIGS["cityscapes27", "dino_vitb8"]
    passed(_READ, f"CocoStuff ViT-S/8 b = {coco.b_self:.2f} / {coco.b_knn:.2f} / {coco.b_rand:.2f}, Cityscapes "
                  f"ViT-B/8 b = {city.b_self:.2f} / {city.b_knn:.2f} / {city.b_rand:.2f} (self / kNN / random): "
                  "the shifts are tuned per dataset and backbone")
