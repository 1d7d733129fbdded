"""Lesson 07's exercise checks: each passes the notebook's solution, fails the stub and a plausible wrong answer."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.exercises import ExerciseNotDone, ExerciseWrong, lesson07
from course_lib.segsort import segment_sort_loss
from exercise_solutions import run_solution, stub as _stub

NOTEBOOK = "07_segsort.ipynb"



def _em() -> dict:
    return run_solution(NOTEBOOK, 1, {"torch": torch})


def test_vmf_em_passes_the_solution(capsys):
    scope = _em()
    lesson07.check_vmf_em(scope["e_step"], scope["m_step"])
    assert "✓" in capsys.readouterr().out


def test_vmf_em_fails_the_stubs():
    scope = _em()
    with pytest.raises(ExerciseNotDone):
        lesson07.check_vmf_em(_stub, scope["m_step"])
    with pytest.raises(ExerciseNotDone):
        lesson07.check_vmf_em(scope["e_step"], _stub)


def test_vmf_em_fails_argmin_the_plain_mean_and_nan_for_empty_segments():
    scope = _em()
    with pytest.raises(ExerciseWrong, match="largest"):
        lesson07.check_vmf_em(lambda points, prototypes: (points @ prototypes.T).argmin(1), scope["m_step"])

    def plain_mean(points, ids, n):               # the Gaussian M-step: not a unit vector
        sums = torch.zeros(n, points.shape[1]).index_add(0, ids, points)
        return sums / torch.bincount(ids, minlength=n).clamp(min=1)[:, None]

    with pytest.raises(ExerciseWrong, match="m_step"):
        lesson07.check_vmf_em(scope["e_step"], plain_mean)

    def nan_when_empty(points, ids, n):
        sums = torch.zeros(n, points.shape[1]).index_add(0, ids, points)
        return sums / sums.norm(dim=1, keepdim=True)

    with pytest.raises(ExerciseWrong, match="NaN"):
        lesson07.check_vmf_em(scope["e_step"], nan_when_empty)


def test_segment_sort_loss_passes_the_solution(capsys):
    scope = run_solution(NOTEBOOK, 2, _em())
    lesson07.check_segment_sort_loss(scope["segment_loss"])
    assert "✓" in capsys.readouterr().out


def test_segment_sort_loss_fails_the_stub_a_missing_kappa_and_unnormalised_prototypes():
    with pytest.raises(ExerciseNotDone):
        lesson07.check_segment_sort_loss(_stub)
    m_step = _em()["m_step"]
    with pytest.raises(ExerciseWrong, match="κ = 10"):
        lesson07.check_segment_sort_loss(lambda e, s, kappa: F.cross_entropy(e @ m_step(e, s, int(s.max()) + 1).T, s))

    def mean_prototypes(e, s, kappa):
        n = int(s.max()) + 1
        means = torch.zeros(n, e.shape[1]).index_add(0, s, e) / torch.bincount(s, minlength=n)[:, None]
        return F.cross_entropy(kappa * e @ means.T, s)

    with pytest.raises(ExerciseWrong):
        lesson07.check_segment_sort_loss(mean_prototypes)


def _flat_scope() -> tuple[dict, torch.Tensor]:
    prior = torch.arange(2 * 6 * 6).reshape(2, 6, 6) // 9 % 4                # 2 images × 4 regions: S = 8
    scope = {"np": np, "torch": torch, "n_segments": 8, "prior": prior, "batch": slice(0, 2), "net": None,
             "train_images": torch.zeros(2), "segment_sort_loss": segment_sort_loss,
             "embed": lambda net, images: F.normalize(torch.randn(2, 5, 6, 6), dim=1)}
    return run_solution(NOTEBOOK, 3, scope), prior


def test_flat_loss_passes_the_solution(capsys):
    scope, prior = _flat_scope()
    lesson07.check_flat_loss(scope["prediction"], scope["flat"], prior)
    assert "log S = log 8" in capsys.readouterr().out


def test_flat_loss_fails_the_stub_and_the_loss_at_kappa_10():
    scope, prior = _flat_scope()
    with pytest.raises(ExerciseNotDone):
        lesson07.check_flat_loss(..., ..., prior)
    at_ten = segment_sort_loss(F.normalize(torch.randn(2, 5, 6, 6), dim=1), prior).item()
    with pytest.raises(ExerciseWrong):
        lesson07.check_flat_loss(scope["prediction"], at_ten, prior)
