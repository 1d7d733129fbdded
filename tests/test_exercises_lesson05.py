"""Lesson 05's exercise checks: each passes the notebook's solution, fails the stub and a plausible wrong answer."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.exercises import ExerciseNotDone, ExerciseWrong, lesson05
from course_lib.ssl import sinkhorn
from exercise_solutions import run_solution, stub as _stub





# ---------------------------------------------------------------- exercise 1: Sinkhorn-Knopp


def test_sinkhorn_passes_the_solution(capsys):
    lesson05.check_sinkhorn(run_solution("05_pass_representation.ipynb", 1)["sinkhorn_knopp"])
    assert "✓" in capsys.readouterr().out


def test_sinkhorn_fails_the_stub():
    with pytest.raises(ExerciseNotDone):
        lesson05.check_sinkhorn(_stub)


def test_sinkhorn_fails_the_b_by_k_orientation():
    """The lesson once wrote CᵀZ as B×K: normalising a B×K matrix's rows to 1/K treats images as prototypes."""
    def b_by_k(m, epsilon, iterations):
        q = torch.exp(m.T.double() / epsilon)         # B×K
        q = q / q.sum()
        b, k = q.shape
        for _ in range(iterations):
            q = q / (k * q.sum(dim=1, keepdim=True))
            q = q / (b * q.sum(dim=0, keepdim=True))
        return (b * q).T

    with pytest.raises(ExerciseWrong):
        lesson05.check_sinkhorn(b_by_k)


def test_sinkhorn_fails_a_transposed_result_and_a_missing_factor_b():
    with pytest.raises(ExerciseWrong, match="K×B"):
        lesson05.check_sinkhorn(lambda m, epsilon, iterations: sinkhorn(m.T, epsilon, iterations))
    with pytest.raises(ExerciseWrong, match="column sums"):
        lesson05.check_sinkhorn(lambda m, epsilon, iterations: sinkhorn(m.T, epsilon, iterations).T / m.shape[1])


# ---------------------------------------------------------------- exercise 2: the pixel-to-pixel loss


def test_p2p_loss_passes_the_solution(capsys):
    lesson05.check_p2p_loss(run_solution("05_pass_representation.ipynb", 2)["p2p_loss"])
    assert "✓" in capsys.readouterr().out


def test_p2p_loss_fails_the_stub():
    with pytest.raises(ExerciseNotDone):
        lesson05.check_p2p_loss(_stub)


def test_p2p_loss_fails_without_stop_gradient():
    def no_stop_gradient(p_a, p_b, z_a, z_b, overlap):
        cosine = (F.cosine_similarity(p_a, z_b, dim=1) + F.cosine_similarity(p_b, z_a, dim=1)) / 2
        return -cosine.flatten(1).mean(dim=1)[overlap].mean()

    with pytest.raises(ExerciseWrong, match="sg"):
        lesson05.check_p2p_loss(no_stop_gradient)


def test_p2p_loss_fails_when_non_overlapping_pairs_count():
    def every_pair(p_a, p_b, z_a, z_b, overlap):
        return -((F.cosine_similarity(p_a, z_b.detach(), dim=1) + F.cosine_similarity(p_b, z_a.detach(), dim=1)) / 2).mean()

    with pytest.raises(ExerciseWrong):
        lesson05.check_p2p_loss(every_pair)


# ---------------------------------------------------------------- exercise 3: the collapsed network


def _collapse_scope() -> dict:
    scores = F.normalize(torch.randn(32, 8), dim=1) @ F.normalize(torch.randn(16, 8), dim=1).T
    return run_solution("05_pass_representation.ipynb", 3, {"sinkhorn": sinkhorn, "scores": scores})


def test_collapse_passes_the_solution(capsys):
    scope = _collapse_scope()
    lesson05.check_collapse(scope["prediction"], scope["collapsed_codes"], 16)
    assert "1/K = 0.0625" in capsys.readouterr().out


def test_collapse_reports_a_wrong_prediction_without_failing(capsys):
    lesson05.check_collapse(1.0, _collapse_scope()["collapsed_codes"], 16)
    assert "off by" in capsys.readouterr().out


def test_collapse_fails_the_stub_and_softmax_codes():
    scope = _collapse_scope()
    with pytest.raises(ExerciseNotDone):
        lesson05.check_collapse(..., ..., 16)
    with pytest.raises(ExerciseNotDone):
        lesson05.check_collapse(0.1, ..., 16)
    softmax_codes = torch.softmax(scope["collapsed"] / 0.05, dim=1)      # no equipartition: the collapse SwAV avoids
    with pytest.raises(ExerciseWrong, match="not a softmax"):
        lesson05.check_collapse(0.1, softmax_codes, 16)
