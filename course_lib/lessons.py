"""Run the course's lessons headless: ``python -m course_lib.lessons run [--out build/course] [--lessons 02 03]``.

Each notebook in ``notebooks/`` is executed in order (toy profile unless ``COURSE_PROFILE`` says
otherwise) in a fresh ``python3`` kernel whose working directory is ``notebooks/``; the executed
copy and an HTML rendering go to the output folder, and one line per notebook reports its status
and duration. The exit status is non-zero when any lesson failed.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .cli import ArgumentParser
from .config import profile, project_root


@dataclass
class LessonRun:
    notebook: Path
    ok: bool
    seconds: float
    error: str = ""


def lesson_notebooks(folder: Path | None = None) -> list[Path]:
    """The numbered lesson notebooks (``NN_*.ipynb``) in order."""
    folder = folder or project_root() / "notebooks"
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no lesson notebooks (NN_*.ipynb) in {folder}")
    return found


def _available(folder: Path | None = None) -> str:
    return ", ".join(p.name[:2] for p in lesson_notebooks(folder))


def lesson_numbers_problem(numbers: list[str], folder: Path | None = None) -> str | None:
    """What is wrong with ``--lessons numbers`` (one that is not a number or not a lesson's, with the lessons
    there are), or ``None``."""
    bad = [number for number in numbers if not number.isdigit()]
    if bad:
        return f"--lessons takes lesson numbers ({_available(folder)}), got {', '.join(bad)}"
    present = {p.name[:2] for p in lesson_notebooks(folder)}
    missing = sorted({f"{int(number):02d}" for number in numbers} - present)
    if missing:
        return f"--lessons: no lesson numbered {', '.join(missing)} (there are {_available(folder)})"
    return None


def select_lessons(numbers: list[str], folder: Path | None = None) -> list[Path]:
    """The lesson notebooks whose number is in ``numbers`` (``"2"`` and ``"02"`` alike), in course order;
    ``SystemExit`` with the problem (:func:`lesson_numbers_problem`) when one is not a lesson's number."""
    problem = lesson_numbers_problem(numbers, folder)
    if problem:
        raise SystemExit(f"error: {problem}")
    wanted = {f"{int(number):02d}" for number in numbers}
    return [p for p in lesson_notebooks(folder) if p.name[:2] in wanted]


def notebooks_problem(paths: list[Path]) -> str | None:
    """The first of the given notebook paths that is not an ``.ipynb`` file, with what is allowed, or ``None``."""
    for path in paths:
        if path.suffix != ".ipynb" or not path.is_file():
            return (f"notebook {path} is not an .ipynb file; give notebook paths (e.g. "
                    f"notebooks/02_feature_correspondences.ipynb) or --lessons NN (lessons {_available()})")
    return None


def run_lesson(notebook: Path, out_dir: Path, timeout: int = 1800) -> LessonRun:
    """Execute one notebook; write ``out_dir/<name>.ipynb`` and ``out_dir/<name>.html``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}})
    start = time.perf_counter()
    error = ""
    try:
        client.execute()
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
    seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / notebook.name)
    body, _ = HTMLExporter().from_notebook_node(nb)
    (out_dir / notebook.with_suffix(".html").name).write_text(body, encoding="utf-8")
    return LessonRun(notebook, not error, seconds, error)


def run_course(out_dir: Path, notebooks: list[Path] | None = None) -> list[LessonRun]:
    """Run every lesson in order, printing ``status  seconds  name`` per lesson."""
    runs = []
    print(f"Running the course in the {profile()!r} profile -> {out_dir}", flush=True)
    for notebook in notebooks or lesson_notebooks():
        run = run_lesson(notebook, out_dir)
        status = "ok  " if run.ok else "FAIL"
        print(f"{status} {run.seconds:7.1f} s  {notebook.name}" + (f"  ({run.error})" if run.error else ""), flush=True)
        runs.append(run)
    total = sum(r.seconds for r in runs)
    failed = [r.notebook.name for r in runs if not r.ok]
    print(f"{len(runs) - len(failed)}/{len(runs)} lessons ran in {total:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m course_lib.lessons", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute every lesson notebook headless")
    run.add_argument("--out", type=Path, default=project_root() / "build" / "course", help="output folder")
    run.add_argument("--lessons", nargs="+", default=None, metavar="NN",
                     help="only the lessons with these numbers, e.g. --lessons 01 02 09 (default: all)")
    run.add_argument("notebooks", nargs="*", type=Path, help="only these notebooks (default: all, in order)")
    args = parser.parse_args(argv)
    # every name is checked before the first lesson runs: one line naming the problem, exit status 2
    problem = notebooks_problem(args.notebooks) or (lesson_numbers_problem(args.lessons) if args.lessons else None)
    if problem:
        parser.error(problem)
    notebooks = [path.resolve() for path in args.notebooks] + (select_lessons(args.lessons) if args.lessons else [])
    runs = run_course(args.out, notebooks or None)
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
