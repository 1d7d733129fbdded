"""Lesson 00's exercise checks: each passes the notebook's solution, fails the stub and a plausible wrong answer."""
from __future__ import annotations

import numpy as np
import pytest

from course_lib.exercises import ExerciseNotDone, ExerciseWrong, lesson00
from exercise_solutions import run_solution, stub as _stub

NOTEBOOK = "00_welcome.ipynb"




def test_decode_passes_the_solution_and_fails_stub_and_uint8(capsys):
    lesson00.check_decode(run_solution(NOTEBOOK, 1, {"np": np})["decode"])
    assert "✓" in capsys.readouterr().out
    with pytest.raises(ExerciseNotDone):
        lesson00.check_decode(_stub)
    with pytest.raises(ExerciseWrong, match="off by"):          # G << 8 in uint8 wraps around
        lesson00.check_decode(lambda png: png[..., 0] + (png[..., 1] << 8))
    with pytest.raises(ExerciseWrong, match="off by"):          # the channels swapped
        lesson00.check_decode(lambda png: png[..., 1].astype(int) + 256 * png[..., 0].astype(int))


def test_match_clusters_passes_the_solution_and_fails_stub_argmax_and_identity(capsys):
    lesson00.check_match_clusters(run_solution(NOTEBOOK, 2, {"np": np})["match_clusters"])
    assert "✓" in capsys.readouterr().out
    with pytest.raises(ExerciseNotDone):
        lesson00.check_match_clusters(_stub)
    with pytest.raises(ExerciseWrong, match="not one-to-one"):
        lesson00.check_match_clusters(lambda confusion: confusion.argmax(1))
    with pytest.raises(ExerciseWrong, match="best one-to-one matching keeps"):
        lesson00.check_match_clusters(lambda confusion: np.arange(len(confusion)))


def test_class_counts_passes_the_solution_and_fails_stub_and_missing_classes(capsys):
    labels = np.array([[0, 0, 2], [2, 2, 0]])                   # class 1 and 3 have no pixel
    scenes = type("Scenes", (), {"num_classes": 4})
    counts = run_solution(NOTEBOOK, 3, {"np": np, "labels": labels, "scenes": scenes})["counts"]
    lesson00.check_class_counts(counts, labels, 4)
    assert "✓" in capsys.readouterr().out
    with pytest.raises(ExerciseNotDone):
        lesson00.check_class_counts(..., labels, 4)
    with pytest.raises(ExerciseWrong, match=r"shape \(3,\), expected \(4,\)"):   # bincount without minlength
        lesson00.check_class_counts(np.bincount(labels.ravel()), labels, 4)


def test_imagenet_s_ids_pass_the_solution_and_fail_stub_and_swapped_ids(capsys):
    answer = run_solution(NOTEBOOK, 4)
    lesson00.check_imagenet_s_ids(answer["other_id"], answer["ignore_id"], answer["n_classes"])
    assert "✓" in capsys.readouterr().out
    with pytest.raises(ExerciseNotDone):
        lesson00.check_imagenet_s_ids(..., ..., ...)
    with pytest.raises(ExerciseWrong, match="ignore_id = 255"):
        lesson00.check_imagenet_s_ids(0, 255, 919)
    with pytest.raises(ExerciseWrong, match="n_classes = 920"):  # 'other' counted as a class
        lesson00.check_imagenet_s_ids(0, 1000, 920)
