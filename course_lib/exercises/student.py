"""Student copies of the lessons: every ``solution`` cell becomes a stub (DESIGN §6, issue 17 item 1).

    python -m course_lib.exercises.student --out build/student [notebooks ...]

A code cell tagged ``solution`` (cell metadata ``"tags": ["solution"]``) becomes its leading comment lines (the
task), then, for each top-level ``def``, the same signature (and docstring) with the body
``raise NotImplementedError("write your solution")``, and for each top-level assigned name
``name = ...  # your code`` — no other code, and no outputs. Every other cell is kept as it is. The check cell
after it then raises :class:`course_lib.exercises.ExerciseNotDone` until the learner fills the stub in.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
from pathlib import Path
from typing import Any, Sequence

from ..cli import run_cli
from ..config import ConfigError

SOLUTION_TAG = "solution"
NOT_IMPLEMENTED = 'raise NotImplementedError("write your solution")'
_PLACEHOLDER = "__course_exercise_stub_body__"


def is_solution_cell(cell: dict[str, Any]) -> bool:
    """Whether a notebook cell (nbformat 4 dict) is a code cell tagged ``solution``."""
    return cell.get("cell_type") == "code" and SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def _source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _assigned_names(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _assigned_names(element)]
    if isinstance(target, ast.Starred):
        return _assigned_names(target.value)
    return []                                    # attribute / subscript targets define no new name


def _function_stub(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    body: list[ast.stmt] = []
    if ast.get_docstring(node, clean=False) is not None:
        body.append(node.body[0])
    body.append(ast.Expr(ast.Name(_PLACEHOLDER)))
    stub = copy.copy(node)
    stub.body = body
    return ast.unparse(stub).replace(_PLACEHOLDER, NOT_IMPLEMENTED)   # unparse would write its string in '…'


def stub_source(source: str) -> str:
    """The student version of a solution cell's ``source`` (see the module docstring).

    Raises :class:`course_lib.config.ConfigError` if the cell is not valid Python or defines nothing to fill in.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ConfigError(f"solution cell is not valid Python ({error}):\n{source}") from error
    lines = source.splitlines()
    comments = []
    for line in lines:
        if not line.lstrip().startswith("#"):
            break
        comments.append(line)
    parts: list[str] = []
    seen: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            parts.append(_function_stub(node))
            continue
        if isinstance(node, ast.Assign):
            names = [name for target in node.targets for name in _assigned_names(target)]
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            names = _assigned_names(node.target)
        else:
            names = []
        for name in names:
            if name not in seen:
                seen.add(name)
                parts.append(f"{name} = ...  # your code")
    if not parts:
        raise ConfigError("solution cell defines no function and assigns no name, so its student copy would be "
                          f"empty; a solution cell must assign the answer's names or define a function:\n{source}")
    return "\n".join(comments + parts)


def student_notebook(notebook: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``notebook`` (nbformat 4 dict) whose solution cells are stubs with no outputs."""
    student = copy.deepcopy(notebook)
    for cell in student.get("cells", []):
        if is_solution_cell(cell):
            cell["source"] = stub_source(_source(cell))
            cell["outputs"] = []
            cell["execution_count"] = None
    return student


def write_student_copies(notebooks: Sequence[Path], out: Path) -> list[Path]:
    """Writes the student copy of each notebook to ``out/<same name>``; returns the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        if path.suffix != ".ipynb" or not path.is_file():
            raise ConfigError(f"notebook {path} is not an existing .ipynb file")
        notebook = json.loads(path.read_text(encoding="utf-8"))
        target = out / path.name
        target.write_text(json.dumps(student_notebook(notebook), indent=1, ensure_ascii=False) + "\n",
                          encoding="utf-8")
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m course_lib.exercises.student", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="lessons to copy (default: notebooks/*.ipynb)")
    parser.add_argument("--out", type=Path, default=Path("build/student"), help="folder for the student copies")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted(Path("notebooks").glob("*.ipynb"))
    if not notebooks:
        raise ConfigError("no notebooks given and none found in notebooks/*.ipynb (run from the repository root)")
    written = write_student_copies(notebooks, args.out)
    print(f"{len(written)} student notebooks -> {args.out}/")
    return written


if __name__ == "__main__":
    run_cli(main)
