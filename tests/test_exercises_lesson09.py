"""Lesson 09's exercise checks: each passes the notebook's solution, fails the stub and a plausible wrong answer."""
from __future__ import annotations

import pytest

from course_lib import full_scale
from course_lib.exercises import ExerciseNotDone, ExerciseWrong, lesson09
from course_lib.luss.pipeline import settings_for
from exercise_solutions import run_solution, stub as _stub

NOTEBOOK = "09_full_scale.ipynb"


def test_attention_scores_pass_the_solution_and_fail_the_stub_and_fp32(capsys):
    scores_gb = run_solution(NOTEBOOK, 1, {"fs": full_scale})["scores_gb"]
    lesson09.check_attention_scores(scores_gb)
    assert "✓" in capsys.readouterr().out
    with pytest.raises(ExerciseNotDone):
        lesson09.check_attention_scores(...)
    with pytest.raises(ExerciseWrong):
        lesson09.check_attention_scores(2 * scores_gb)              # 4 bytes a value: fp32, not bf16
    with pytest.raises(ExerciseWrong):
        lesson09.check_attention_scores(scores_gb / 6)              # one head


def test_cache_size_passes_the_solution_and_fails_the_stub_and_a_16_px_grid(capsys):
    cache_gb = run_solution(NOTEBOOK, 2, {"fs": full_scale})["cache_gb"]
    lesson09.check_cache_size(cache_gb)
    assert "77.6 GB" in capsys.readouterr().out                    # 64 431 × 768 × 28² × 2 bytes
    with pytest.raises(ExerciseNotDone):
        lesson09.check_cache_size(...)
    with pytest.raises(ExerciseWrong):
        lesson09.check_cache_size(cache_gb / 4)                     # (224/16)² positions: ViT-B/16, not B/8


def test_four_gpus_pass_the_solution_and_fail_the_stub_and_unscaled_values(capsys):
    scope = run_solution(NOTEBOOK, 3, {"settings_for": settings_for})
    answers = scope["global_batch"], scope["queue_per_gpu"], scope["scaled_lr"]
    assert answers == (128, 512, 0.3)
    lesson09.check_four_gpus(*answers)
    assert "✓" in capsys.readouterr().out
    with pytest.raises(ExerciseNotDone):
        lesson09.check_four_gpus(..., ..., ...)
    with pytest.raises(ExerciseWrong, match="queue"):               # the whole queue on every GPU
        lesson09.check_four_gpus(128, 2048, 0.3)
    with pytest.raises(ExerciseWrong, match="learning rate"):       # the official lr kept with half the batch
        lesson09.check_four_gpus(128, 512, 0.6)
    with pytest.raises(ExerciseWrong, match="global batch"):        # batch_size read as the global batch
        lesson09.check_four_gpus(32, 512, 0.3)
