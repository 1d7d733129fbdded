"""Lesson 01's exercise checks: each passes the notebook's solution, fails the stub and a plausible wrong answer."""
from __future__ import annotations

import pytest
import torch

from course_lib.exercises import ExerciseNotDone, ExerciseWrong, lesson01
from exercise_solutions import run_solution, stub as _stub

NOTEBOOK = "01_dino.ipynb"



def test_n_tokens_passes_the_solution_and_fails_stub_and_missing_cls(capsys):
    answer = run_solution(NOTEBOOK, 1)
    lesson01.check_n_tokens(answer["n_tokens"], answer["attention_entries"])
    assert "✓" in capsys.readouterr().out
    with pytest.raises(ExerciseNotDone):
        lesson01.check_n_tokens(..., ...)
    with pytest.raises(ExerciseWrong, match="the \\[CLS\\] token is missing"):
        lesson01.check_n_tokens(40 * 60, (40 * 60) ** 2)
    with pytest.raises(ExerciseWrong, match="attention entries per head"):
        lesson01.check_n_tokens(2401, 2401)


def test_dino_loss_passes_the_solution_and_fails_stub_no_centering_and_swapped_temperatures(capsys):
    lesson01.check_dino_loss(run_solution(NOTEBOOK, 2)["dino_loss"])
    assert "✓" in capsys.readouterr().out
    with pytest.raises(ExerciseNotDone):
        lesson01.check_dino_loss(_stub)

    def no_centering(student, teacher, center, student_temp, teacher_temp):
        return -((teacher / teacher_temp).softmax(-1) * (student / student_temp).log_softmax(-1)).sum(-1).mean()

    def swapped(student, teacher, center, student_temp, teacher_temp):
        return -(((teacher - center) / student_temp).softmax(-1)
                 * (student / teacher_temp).log_softmax(-1)).sum(-1).mean()

    for wrong in (no_centering, swapped):
        with pytest.raises(ExerciseWrong, match="off by"):
            lesson01.check_dino_loss(wrong)


def test_centering_passes_the_solution_and_fails_stub_and_a_shared_centre(capsys):
    generator = torch.Generator().manual_seed(3)
    logits, shift = torch.randn(64, 8, generator=generator), torch.randn(1, 8, generator=generator) * 5
    answer = run_solution(NOTEBOOK, 3, {"torch": torch, "logits": logits, "shift": shift})
    lesson01.check_centering(answer["p_a"], answer["p_b"], logits, shift)
    assert "✓" in capsys.readouterr().out
    with pytest.raises(ExerciseNotDone):
        lesson01.check_centering(..., ..., logits, shift)
    p_a = ((logits - logits.mean(0, keepdim=True)) / 0.04).softmax(-1)
    p_b_wrong = ((logits + shift - logits.mean(0, keepdim=True)) / 0.04).softmax(-1)   # centred on the old mean
    with pytest.raises(ExerciseWrong, match="ITS OWN mean"):
        lesson01.check_centering(p_a, p_b_wrong, logits, shift)
