"""Lesson 03's exercise checks: each passes the notebook's solution, fails the stub and plausible wrong answers."""
from __future__ import annotations

import types
from dataclasses import replace

import pytest
import torch

from course_lib.exercises import ExerciseNotDone, ExerciseWrong, lesson03
from course_lib.stego import TOY_CONFIG
from course_lib.stego.diagnostics import PairCorrespondences
from exercise_solutions import run_solution, stub as _stub

NOTEBOOK = "03_stego_loss.ipynb"


def _unit(t: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(t, dim=1)


def _loss_variant(centre: str = "official", clamp: str = "codes"):
    """A pair loss with one plausible mistake: the centering ("none", "no global mean", "per image", "hw axes")
    or the clamp ("none", "features")."""

    def loss(feats1, feats2, codes1, codes2, shift):
        target = torch.einsum("bchw,bcij->bhwij", _unit(feats1), _unit(feats2))
        if centre == "official":
            target = target - target.mean((3, 4), keepdim=True) + target.mean()
        elif centre == "no global mean":
            target = target - target.mean((3, 4), keepdim=True)
        elif centre == "per image":
            target = target - target.mean((3, 4), keepdim=True) + target.mean((1, 2, 3, 4), keepdim=True)
        elif centre == "hw axes":
            target = target - target.mean((1, 2), keepdim=True) + target.mean()
        codes = torch.einsum("bchw,bcij->bhwij", _unit(codes1), _unit(codes2))
        if clamp == "codes":
            codes = codes.clamp(min=0)
        elif clamp == "features":
            target = target.clamp(min=0)
        return -((target - shift) * codes).mean()

    return loss


def test_correlation_loss_passes_the_solution(capsys):
    scope = run_solution(NOTEBOOK, 1, {"torch": torch})
    lesson03.check_correlation_loss(scope["pair_loss"])
    assert "✓" in capsys.readouterr().out
    lesson03.check_correlation_loss(_loss_variant())              # the test's own correct variant passes too


def test_correlation_loss_fails_the_stub():
    with pytest.raises(ExerciseNotDone):
        lesson03.check_correlation_loss(_stub)
    with pytest.raises(ExerciseNotDone):
        lesson03.check_correlation_loss(lambda *args: ...)


@pytest.mark.parametrize("centre, clamp", [("none", "codes"), ("no global mean", "codes"), ("per image", "codes"),
                                           ("hw axes", "codes"), ("official", "none"), ("official", "features")])
def test_correlation_loss_fails_wrong_centering_and_clamping(centre, clamp):
    with pytest.raises(ExerciseWrong, match="off by"):
        lesson03.check_correlation_loss(_loss_variant(centre, clamp))


def test_correlation_loss_fails_a_sum_and_a_crash():
    with pytest.raises(ExerciseWrong):
        lesson03.check_correlation_loss(lambda *args: _loss_variant()(*args) * 2 * 25 * 24)   # sum, not mean
    with pytest.raises(ExerciseWrong, match="RuntimeError"):
        lesson03.check_correlation_loss(lambda f1, f2, c1, c2, b: torch.einsum("bchw,bchw->b", f1, f2))


# ---------------------------------------------------------------- exercise 2: raise b_rand


def _rand_pairs() -> PairCorrespondences:
    values = torch.linspace(-0.2, 1.0, 1201)
    return PairCorrespondences(values=values, same_class=values > 0.5)


def _codes(spread: float, seed: int) -> torch.Tensor:
    """N×D×h×w codes: a shared direction plus noise; a larger ``spread`` gives a smaller max(S, 0) across images."""
    generator = torch.Generator().manual_seed(seed)
    shared = torch.zeros(1, 8, 1, 1)
    shared[0, 0] = 1.0
    return shared + spread * torch.randn(12, 8, 3, 3, generator=generator)


def _exercise2_scope(capture: list) -> dict:
    """The lesson variables exercise 2's solution reads; training is replaced by codes whose spread grows with b."""

    class FakeModel:
        def __init__(self, dim, n_classes, config):
            self.config = config

        def to(self, device):
            return self

        def cpu(self):
            return self

    def train_stego(head, source):
        capture.append(head.config)

    def flip_averaged_codes(head, features, flipped):
        return _codes(0.5 + head.config.b_rand, seed=1)

    toy = replace(TOY_CONFIG)
    return {"torch": torch, "replace": replace, "SEED": 0, "demo_config": toy, "toy": toy, "K": 5,
            "pairs": {"rand": _rand_pairs()}, "StegoModel": FakeModel, "train_stego": train_stego,
            "flip_averaged_codes": flip_averaged_codes, "train_features": torch.zeros(4, 16, 3, 3),
            "val_features": torch.zeros(2),
            "data": types.SimpleNamespace(source=None, val_flipped=types.SimpleNamespace(features=torch.zeros(2))),
            "config": types.SimpleNamespace(smoke_steps=lambda steps: steps),
            "lesson": types.SimpleNamespace(train=types.SimpleNamespace(device=lambda: "cpu"))}


def test_raise_b_rand_passes_the_solution(capsys):
    configs: list = []
    scope = run_solution(NOTEBOOK, 2, _exercise2_scope(configs))
    assert [c.b_rand for c in configs] == pytest.approx(scope["b_rand_values"]) and configs[0].steps == 30
    lesson03.check_raise_b_rand(scope["predicted_share"], scope["predicted_codes"], scope["b_rand_values"],
                                scope["attracted"], scope["rand_codes"], _rand_pairs())
    out = capsys.readouterr().out
    assert "(down; your prediction was right)" in out and "was wrong" not in out


def test_raise_b_rand_reports_a_wrong_prediction(capsys):
    scope = run_solution(NOTEBOOK, 2, _exercise2_scope([]))
    lesson03.check_raise_b_rand("up", "down", scope["b_rand_values"], scope["attracted"], scope["rand_codes"],
                                _rand_pairs())
    assert "your prediction was wrong" in capsys.readouterr().out


def test_raise_b_rand_fails_the_stub_the_repelled_share_and_a_lowered_b():
    scope = run_solution(NOTEBOOK, 2, _exercise2_scope([]))
    args = [scope[name] for name in ("predicted_share", "predicted_codes", "b_rand_values", "attracted",
                                     "rand_codes")]
    for index in range(5):
        stubbed = list(args)
        stubbed[index] = ...
        with pytest.raises(ExerciseNotDone):
            lesson03.check_raise_b_rand(*stubbed, _rand_pairs())
    repelled = [1 - share for share in scope["attracted"]]                      # F^SC < b counted instead
    with pytest.raises(ExerciseWrong, match="attracted shares"):
        lesson03.check_raise_b_rand(*args[:3], repelled, args[4], _rand_pairs())
    lowered = [args[2][0], args[2][0] - 0.4]
    with pytest.raises(ExerciseWrong, match="larger one"):
        lesson03.check_raise_b_rand(*args[:2], lowered, [_rand_pairs().attracted_share(b) for b in lowered],
                                    args[4], _rand_pairs())
    with pytest.raises(ExerciseWrong, match="one of"):
        lesson03.check_raise_b_rand("lower", *args[1:], _rand_pairs())


# ---------------------------------------------------------------- exercise 3: the official λ and b


def test_official_hyperparameters_pass_the_solution(capsys):
    scope = run_solution(NOTEBOOK, 3)
    lesson03.check_official_hyperparameters(scope["cocostuff"], scope["cityscapes"])
    assert "✓" in capsys.readouterr().out


def test_official_hyperparameters_fail_the_stub_the_active_block_and_swapped_terms():
    scope = run_solution(NOTEBOOK, 3)
    coco, city = scope["cocostuff"], scope["cityscapes"]
    with pytest.raises(ExerciseNotDone):
        lesson03.check_official_hyperparameters(..., city)
    with pytest.raises(ExerciseNotDone):
        lesson03.check_official_hyperparameters(coco, {**city, "b_rand": ...})
    active = {**coco, "b_self": 0.18, "b_knn": 0.12, "b_rand": 0.46}         # train_config.yml:58-64, IAROA
    with pytest.raises(ExerciseWrong, match="IAROA"):
        lesson03.check_official_hyperparameters(active, city)
    swapped = {**coco, "lambda_self": coco["lambda_knn"], "lambda_knn": coco["lambda_self"]}
    with pytest.raises(ExerciseWrong, match="pos_intra"):
        lesson03.check_official_hyperparameters(swapped, city)
    with pytest.raises(ExerciseWrong, match="b_rand"):
        lesson03.check_official_hyperparameters(coco, {**city, "b_rand": 0.25})
    with pytest.raises(ExerciseWrong, match="missing"):
        lesson03.check_official_hyperparameters({k: v for k, v in coco.items() if k != "b_knn"}, city)
