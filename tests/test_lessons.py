"""The headless course runner behind `make course`."""
import nbformat

from course_lib.lessons import lesson_notebooks, main, run_course


def _notebook(path, source):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_runner_executes_in_order_and_reports_failures(tmp_path, capsys):
    good = _notebook(tmp_path / "00_good.ipynb", "import os; print('cwd', os.path.basename(os.getcwd()))")
    bad = _notebook(tmp_path / "01_bad.ipynb", "raise ValueError('broken lesson')")
    (tmp_path / "scratch.ipynb").write_text("{}")  # not a numbered lesson
    assert lesson_notebooks(tmp_path) == [good, bad]
    runs = run_course(tmp_path / "out", lesson_notebooks(tmp_path))
    assert [run.ok for run in runs] == [True, False]
    assert "broken lesson" in runs[1].error
    executed = nbformat.read(tmp_path / "out" / "00_good.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"].strip() == f"cwd {tmp_path.name}"
    assert (tmp_path / "out" / "01_bad.html").read_text().count("broken lesson") >= 1
    printed = capsys.readouterr().out
    assert "ok " in printed and "FAIL" in printed and "1/2 lessons ran" in printed


def test_main_exit_status(tmp_path):
    good = _notebook(tmp_path / "00_good.ipynb", "1 + 1")
    assert main(["run", "--out", str(tmp_path / "out"), str(good)]) == 0
    bad = _notebook(tmp_path / "01_bad.ipynb", "1 / 0")
    assert main(["run", "--out", str(tmp_path / "out"), str(bad)]) == 1
