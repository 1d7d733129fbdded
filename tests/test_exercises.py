"""The exercise helpers (course_lib.exercises) and the student tool (course_lib.exercises.student), on a small
notebook and on every committed lesson: each solution cell becomes a stub with no solution code left, is followed by
a check cell, and the stub run through its check raises ExerciseNotDone."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.config import ConfigError
from course_lib.exercises import (ExerciseNotDone, ExerciseWrong, call_learner, expect, expect_close, passed,
                                  require_done)
from course_lib.exercises import student

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _code(source: str, tags: tuple[str, ...] = ()) -> dict:
    return {"cell_type": "code", "metadata": {"tags": list(tags)} if tags else {}, "source": source,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "42\n"}], "execution_count": 3}


def _notebook(*cells: dict) -> dict:
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _is_not_implemented(statement: ast.stmt) -> bool:
    return ast.dump(statement) == ast.dump(ast.parse(student.NOT_IMPLEMENTED).body[0])


# ---------------------------------------------------------------- helpers


def test_require_done_rejects_the_stub_and_returns_an_answer():
    for stub in (..., None):
        with pytest.raises(ExerciseNotDone, match="not done yet"):
            require_done(stub, "exercise 1")
    assert require_done(0.5, "exercise 1") == 0.5


def test_call_learner_maps_stub_and_bug_to_the_two_errors():
    def stub():
        raise NotImplementedError("write your solution")

    def buggy(x):
        return x @ torch.ones(3, 2)

    with pytest.raises(ExerciseNotDone):
        call_learner(stub, what="ex")
    with pytest.raises(ExerciseNotDone):
        call_learner(lambda: ..., what="ex")
    with pytest.raises(ExerciseWrong, match="RuntimeError"):
        call_learner(buggy, torch.ones(2, 2), what="ex")
    assert call_learner(lambda a, b=0: a + b, 1, b=2, what="ex") == 3


def test_expect_close_names_shapes_and_error():
    expect_close(torch.tensor([1.0, 2.0]), np.array([1.0, 2.0]), "ex")
    with pytest.raises(ExerciseWrong, match=r"shape \(2,\), expected \(3,\)"):
        expect_close(np.zeros(2), np.zeros(3), "ex")
    with pytest.raises(ExerciseWrong, match=r"off by 10 % at index \(1,\).*hint: centre it"):
        expect_close([1.0, 2.2], [1.0, 2.0], "ex", hint="centre it")
    with pytest.raises(ExerciseWrong, match="NaN"):
        expect_close(float("nan"), 1.0, "ex")
    with pytest.raises(ExerciseNotDone):
        expect_close(..., 1.0, "ex")


def test_expect_and_passed(capsys):
    expect(True, "ex", "never shown")
    with pytest.raises(ExerciseWrong, match="✗ ex: too large"):
        expect(False, "ex", "too large")
    passed("exercise 1", "0.5 as expected")
    assert capsys.readouterr().out == "✓ exercise 1: 0.5 as expected\n"


def test_errors_render_as_their_message_only():
    error = ExerciseWrong("✗ ex: off\nsecond line")
    assert error._render_traceback_() == ["✗ ex: off", "second line"]
    assert isinstance(error, AssertionError) and isinstance(ExerciseNotDone("x"), AssertionError)


# ---------------------------------------------------------------- the student tool on a small notebook


SOLUTION = '''# Exercise 1: the loss.
# Write loss(a, b) and the number k.
import torch
def loss(a: torch.Tensor, b: float = 0.5) -> torch.Tensor:
    """Mean of a - b."""
    return (a - b).mean()
k, (m, *rest) = 3, (1, 2, 3)
k = 4
total: float = 1.0
print(loss(torch.ones(2)))
'''


def test_stub_source_keeps_the_task_signatures_and_names_only():
    stub = student.stub_source(SOLUTION)
    assert stub.splitlines()[:2] == ["# Exercise 1: the loss.", "# Write loss(a, b) and the number k."]
    tree = ast.parse(stub)
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert [f.name for f in functions] == ["loss"]
    assert ast.unparse(functions[0].args) == "a: torch.Tensor, b: float=0.5"
    assert _is_not_implemented(functions[0].body[-1]) and student.NOT_IMPLEMENTED in stub
    assert "k = ...  # your code" in stub and "total = ...  # your code" in stub and "rest = ..." in stub
    assert stub.count("k = ...") == 1
    for solution_code in ("(a - b).mean()", "import torch", "print(", "(1, 2, 3)", "1.0"):
        assert solution_code not in stub
    namespace: dict = {}
    exec(stub, namespace)
    assert namespace["k"] is ... and namespace["m"] is ...
    with pytest.raises(NotImplementedError):
        namespace["loss"](torch.ones(1))


def test_stub_source_refuses_a_cell_with_nothing_to_fill_in():
    with pytest.raises(ConfigError, match="defines no function and assigns no name"):
        student.stub_source("# task\nprint(1)\n")
    with pytest.raises(ConfigError, match="not valid Python"):
        student.stub_source("def (:\n")


def test_student_tool_writes_copies_with_stubbed_solution_cells_only(tmp_path):
    source = tmp_path / "00_small.ipynb"
    notebook = _notebook({"cell_type": "markdown", "metadata": {}, "source": "### Exercise 1: the loss"},
                         _code(SOLUTION, ("solution",)), _code("check(loss, k)"), _code("x = 1", ("other",)))
    source.write_text(json.dumps(notebook))
    written = student.main(["--out", str(tmp_path / "student"), str(source)])
    assert written == [tmp_path / "student" / "00_small.ipynb"]
    copy = json.loads(written[0].read_text())
    cells = copy["cells"]
    assert cells[0] == notebook["cells"][0] and cells[2:] == notebook["cells"][2:]   # outputs of the others kept
    assert cells[1]["source"] == student.stub_source(SOLUTION)
    assert cells[1]["outputs"] == [] and cells[1]["execution_count"] is None
    assert json.loads(source.read_text()) == notebook                               # the lesson is untouched


def test_student_tool_names_a_missing_notebook(tmp_path):
    with pytest.raises(ConfigError, match="nope.ipynb is not an existing .ipynb file"):
        student.main(["--out", str(tmp_path), str(tmp_path / "nope.ipynb")])


def test_student_command_reports_a_missing_notebook_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "course_lib.exercises.student", "--out", str(tmp_path),
                             str(tmp_path / "nope.ipynb")], capture_output=True, text=True, cwd=NOTEBOOKS.parent)
    assert result.returncode == 2
    assert "error: notebook" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- every committed lesson


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _solution_indices(cells: list[dict]) -> list[int]:
    return [i for i, cell in enumerate(cells) if student.is_solution_cell(cell)]


def _check_call(source: str) -> ast.Call | None:
    """The ``course_lib.exercises.lessonNN.check_...(...)`` / ``lessonNN.check_...(...)`` call in a cell."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.startswith("check_"):
            return node
    return None


LESSONS_WITH_EXERCISES = [path for path in LESSONS if _solution_indices(_cells(path))]


@pytest.mark.parametrize("path", LESSONS_WITH_EXERCISES, ids=lambda p: p.stem)
def test_lesson_solution_cells_become_stubs_followed_by_a_check(path):
    cells = _cells(path)
    copy = student.student_notebook({"cells": cells})["cells"]
    for i in _solution_indices(cells):
        assert cells[i - 1]["cell_type"] == "markdown" and "### Exercise" in "".join(cells[i - 1]["source"]), (
            f"{path.name} cell {i}: a solution cell must follow its '### Exercise N:' cell")
        stub = copy[i]["source"]
        for node in ast.parse(stub).body:                   # nothing but stubbed defs and `name = ...`
            if isinstance(node, ast.FunctionDef):
                assert _is_not_implemented(node.body[-1])
                assert len(node.body) <= 2                  # an optional docstring, then the raise
            else:
                assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                assert node.value.value is ..., f"{path.name} cell {i}: {ast.unparse(node)}"
        assert copy[i]["outputs"] == []
        assert i + 1 < len(cells) and cells[i + 1]["cell_type"] == "code", f"{path.name} cell {i}: no check cell"
        assert _check_call("".join(cells[i + 1]["source"])) is not None, (
            f"{path.name} cell {i + 1}: the cell after a solution must call a check_... function")


@pytest.mark.parametrize("path", LESSONS_WITH_EXERCISES, ids=lambda p: p.stem)
def test_lesson_stubs_fail_their_checks_as_not_done(path):
    """Runs each stub in a fresh namespace, then the next cell's check call with the stub's names as arguments (the
    other arguments, the lesson's own variables, are not needed: a check tests for the stub before it uses them)."""
    import importlib

    cells = _cells(path)
    checked = 0
    for i in _solution_indices(cells):
        namespace: dict = {}
        exec(student.stub_source("".join(cells[i]["source"])), namespace)
        call = _check_call("".join(cells[i + 1]["source"]))
        module = importlib.import_module(f"course_lib.exercises.lesson{path.name[:2]}")
        check = getattr(module, call.func.attr)
        names = [arg.id if isinstance(arg, ast.Name) else None for arg in call.args]
        keywords = {kw.arg: kw.value.id if isinstance(kw.value, ast.Name) else None for kw in call.keywords}
        if not all(name in namespace for name in names + list(keywords.values())):
            continue                                        # an argument is a lesson variable: covered per lesson
        with pytest.raises(ExerciseNotDone):
            check(*[namespace[n] for n in names], **{k: namespace[v] for k, v in keywords.items()})
        checked += 1
    assert checked, f"{path.name}: no check called with the stub's names only"
