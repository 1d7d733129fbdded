"""Lesson 06's exercise checks: each passes the notebook's solution, fails the stub and a plausible wrong answer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib.exercises import ExerciseNotDone, ExerciseWrong, lesson06
from exercise_solutions import run_solution, stub as _stub

NOTEBOOK = "06_pass_labels.ipynb"



def test_tau_labels_passes_the_solution(capsys):
    lesson06.check_tau_labels(run_solution(NOTEBOOK, 1, {"np": np})["pseudo_labels"])
    assert "✓" in capsys.readouterr().out


def test_tau_labels_fails_the_stub_and_a_non_strict_threshold():
    with pytest.raises(ExerciseNotDone):
        lesson06.check_tau_labels(_stub)
    with pytest.raises(ExerciseWrong, match="exactly τ"):      # ā <= τ: the official code keeps ā = τ
        lesson06.check_tau_labels(lambda ids, a, tau: np.where(a <= tau, 0, ids))


def _labels(seed: int = 0, n: int = 6, k: int = 4) -> tuple[list, list]:
    """Ground truths (0 'other', 1..k, a column of 1000) and noisy pseudo-labels of n 12×12 images."""
    generator = np.random.default_rng(seed)
    truths, predictions = [], []
    for _ in range(n):
        truth = np.zeros((12, 12), np.int64)
        truth[3:9, 2:8] = generator.integers(1, k + 1)
        truth[:, 0] = 1000
        noise = generator.random((12, 12)) < 0.3
        predictions.append(np.where(noise, generator.integers(0, k + 1, size=(12, 12)), np.where(truth == 1000, 0, truth)))
        truths.append(truth)
    return predictions, truths


def test_other_contribution_passes_the_solution(capsys):
    predictions, truths = _labels()
    scope = run_solution(NOTEBOOK, 2, {"np": np, "gt": truths, "pseudo_val": predictions, "K": 4})
    lesson06.check_other_contribution(scope["other_iou"], scope["other_share_of_miou"], predictions, truths, 4)
    assert "✓" in capsys.readouterr().out


def test_other_contribution_fails_the_stub_the_share_of_other_and_a_missing_division():
    predictions, truths = _labels()
    with pytest.raises(ExerciseNotDone):
        lesson06.check_other_contribution(..., ..., predictions, truths, 4)
    scope = run_solution(NOTEBOOK, 2, {"np": np, "gt": truths, "pseudo_val": predictions, "K": 4})
    valid = np.stack(truths) != 1000
    share = 100 * float((np.stack(truths) == 0)[valid].mean())           # the share of 'other', not its IoU
    with pytest.raises(ExerciseWrong, match="IoU"):
        lesson06.check_other_contribution(share, share / 5, predictions, truths, 4)
    with pytest.raises(ExerciseWrong, match="part of the mIoU"):        # the IoU itself is not its part of the mean
        lesson06.check_other_contribution(scope["other_iou"], scope["other_iou"], predictions, truths, 4)


def test_attention_pooling_passes_the_solution(capsys):
    lesson06.check_attention_pooling(run_solution(NOTEBOOK, 3, {"torch": torch})["attention_pooled"])
    assert "✓" in capsys.readouterr().out


def test_attention_pooling_fails_the_stub_and_plausible_mistakes():
    with pytest.raises(ExerciseNotDone):
        lesson06.check_attention_pooling(_stub)
    normalize = torch.nn.functional.normalize
    with pytest.raises(ExerciseWrong):                                  # the channel mean ā instead of a
        lesson06.check_attention_pooling(lambda f, a: normalize((f * a.mean(1, keepdim=True)).mean((2, 3)), dim=1))
    with pytest.raises(ExerciseWrong):                                  # x̂ (normalised per pixel) instead of F
        lesson06.check_attention_pooling(lambda f, a: normalize((normalize(f, dim=1) * a).mean((2, 3)), dim=1))
    with pytest.raises(ExerciseWrong, match="norms"):                   # not normalised
        lesson06.check_attention_pooling(lambda f, a: (f * a).mean((2, 3)))
