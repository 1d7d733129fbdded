"""Helpers of the lessons' exercise tests (tests/test_exercises_lessonNN.py): run a lesson's worked solution, and
the stub a student copy holds in its place."""
from __future__ import annotations

import json
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_solution(notebook: str, exercise: int, namespace: dict | None = None) -> dict:
    """Executes the solution cell (tagged ``solution``) that follows the markdown cell starting with
    "### Exercise <exercise>:" in ``notebooks/<notebook>``, in a copy of ``namespace`` (the lesson variables it
    reads), and returns that namespace."""
    cells = json.loads((NOTEBOOKS / notebook).read_text(encoding="utf-8"))["cells"]
    heading = f"### Exercise {exercise}:"
    for markdown, solution in zip(cells, cells[1:]):
        if markdown["cell_type"] == "markdown" and "".join(markdown["source"]).lstrip().startswith(heading):
            assert "solution" in solution["metadata"].get("tags", []), f"{notebook}: {heading} has no solution cell"
            scope = dict(namespace or {})
            exec(compile("".join(solution["source"]), f"{notebook} {heading}", "exec"), scope)
            return scope
    raise LookupError(f"{notebook} has no markdown cell starting with {heading!r}")


def stub(*args, **kwargs):
    """What a student copy's function holds before the learner writes it (course_lib.exercises.student)."""
    raise NotImplementedError("write your solution")
