"""Lesson 08's exercise checks: each passes the notebook's solution, fails the stub and a plausible wrong answer."""
from __future__ import annotations

import numpy as np
import pytest

from course_lib.exercises import ExerciseNotDone, ExerciseWrong, lesson08
from exercise_solutions import run_solution, stub as _stub

NOTEBOOK = "08_evaluation.ipynb"



def test_hungarian_passes_the_solution(capsys):
    lesson08.check_hungarian(run_solution(NOTEBOOK, 1, {"np": np})["match_clusters"])
    assert "✓" in capsys.readouterr().out


def test_hungarian_fails_the_stub_a_row_argmax_and_the_inverse_map():
    with pytest.raises(ExerciseNotDone):
        lesson08.check_hungarian(_stub)
    with pytest.raises(ExerciseWrong, match="one-to-one"):
        lesson08.check_hungarian(lambda stats: stats.argmax(1))
    solution = run_solution(NOTEBOOK, 1, {"np": np})["match_clusters"]
    with pytest.raises(ExerciseWrong, match="optimum"):             # class → cluster instead of cluster → class
        lesson08.check_hungarian(lambda stats: np.argsort(solution(stats)))


def test_co_occurrence_passes_the_solution(capsys):
    lesson08.check_co_occurrence(run_solution(NOTEBOOK, 2, {"np": np})["co_occurrence"])
    assert "✓" in capsys.readouterr().out


def test_co_occurrence_fails_the_stub_pixel_counts_and_ignore_pixels():
    with pytest.raises(ExerciseNotDone):
        lesson08.check_co_occurrence(_stub)

    def pixels(predictions, truths, k):
        matrix = np.zeros((k, k), np.int64)
        for p, t in zip(predictions, truths):
            keep = (t != 1000) & (p > 0) & (t > 0)
            np.add.at(matrix, (p[keep] - 1, t[keep] - 1), 1)
        return matrix

    with pytest.raises(ExerciseWrong):
        lesson08.check_co_occurrence(pixels)

    def with_ignore(predictions, truths, k):
        ids = np.arange(1, k + 1)
        return sum(np.outer(np.isin(ids, p), np.isin(ids, t)) for p, t in zip(predictions, truths))

    with pytest.raises(ExerciseWrong):
        lesson08.check_co_occurrence(with_ignore)


def test_f_measure_passes_the_solution(capsys):
    lesson08.check_f_measure(run_solution(NOTEBOOK, 3)["f_measure"])
    assert "✓" in capsys.readouterr().out


def test_f_measure_fails_the_stub_beta_for_beta_squared_and_swapped_precision_recall():
    with pytest.raises(ExerciseNotDone):
        lesson08.check_f_measure(_stub)

    def f_beta(beta_squared, swap=False):
        def f(prediction, truth):
            counted = truth != 1000
            predicted, true = (prediction != 0) & counted, (truth != 0) & counted
            hits = (predicted & true).sum()
            if hits == 0:
                return 0.0
            precision, recall = hits / predicted.sum(), hits / true.sum()
            if swap:
                precision, recall = recall, precision
            return float((1 + beta_squared) * precision * recall / (beta_squared * precision + recall))
        return f

    lesson08.check_f_measure(f_beta(0.3))
    with pytest.raises(ExerciseWrong):
        lesson08.check_f_measure(f_beta(0.3 ** 2))
    with pytest.raises(ExerciseWrong):
        lesson08.check_f_measure(f_beta(0.3, swap=True))
