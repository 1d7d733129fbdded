"""The full profile's dry run (issue 14, DESIGN §10): every full-scale CLI and every lesson, run as a user runs
them with ``COURSE_PROFILE=full COURSE_SMOKE=1`` on a data root in the official layouts with random weights
under the official file names (``tests/full_data_root.py``).

It proves the plumbing (loaders, derived data prepared on the fly, checkpoints, metrics, the lessons' full
branches), not the quality: with random weights and four images the numbers mean nothing, only that they
are finite and in range. The CLIs write to the standard run folders (``COURSE_CACHE/runs/...``), so the
lessons that load "the CLI's run when it exists" take that path too.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from full_data_root import make_full_data_root

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
DATASET_NAMES = ("CocoStuff-27", "Cityscapes-27", "ImageNet-S50", "PASCAL VOC 2012")


def _env(data: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ, COURSE_PROFILE="full", COURSE_SMOKE="1", COURSE_DATA=str(data), COURSE_CACHE=str(cache),
               TQDM_DISABLE="1", OMP_NUM_THREADS="1", COURSE_DEVICE="cpu")
    env.pop("COURSE_DOWNLOAD_MIRROR", None)
    return env


def _run(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _finite_numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [x for item in value.values() for x in _finite_numbers(item)]
    if isinstance(value, list):
        return [x for item in value for x in _finite_numbers(item)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


@pytest.fixture(scope="module")
def full_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("full_profile")
    make_full_data_root(base / "data", base / "cache")
    return base / "data", base / "cache"


CLI_RUNS = {
    "stego": (["-m", "course_lib.stego.train", "--dataset", "cocostuff27", "--backbone", "dino_vits8"],
              "stego_cocostuff27_dino_vits8", ("cluster_mIoU", "linear_mIoU"), "stego.pt"),
    "pass": (["-m", "course_lib.luss", "pipeline", "--dataset", "imagenet_s50"],
             "pass_imagenet_s50_resnet18", ("mIoU",), None),
    "segsort": (["-m", "course_lib.segsort.train", "--dataset", "voc2012"],
                "segsort_voc2012_resnet101", ("mIoU",), "segsort.pt"),
}


def _find_metric(metrics: dict, key: str):
    """``metrics[key]``, also looked up one level down (a pipeline's metrics are grouped by stage)."""
    if key in metrics:
        return metrics[key]
    found = [value[key] for value in metrics.values() if isinstance(value, dict) and key in value]
    return found[0] if found else None


@pytest.mark.parametrize("method", list(CLI_RUNS))
def test_cli_runs_from_raw_dataset_to_metrics(full_root, method):
    data, cache = full_root
    args, run_name, keys, model_file = CLI_RUNS[method]
    out = cache / "runs" / run_name
    done = _run([*args, "--out", str(out)], _env(data, cache))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    saved_config = json.loads((out / "config.json").read_text())
    assert saved_config, "config.json is empty"
    metrics = json.loads((out / "metrics.json").read_text())  # json.loads rejects NaN written by allow_nan=False
    assert all(math.isfinite(x) for x in _finite_numbers(metrics))
    for key in keys:
        value = _find_metric(metrics, key)
        assert value is not None and 0.0 <= value <= 100.0, (key, value)
    if model_file:
        assert (out / model_file).is_file()
    printed = _run([*args, "--out", str(out), "--print-config"], _env(data, cache), timeout=120)
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert isinstance(json.loads(printed.stdout), dict)


def test_every_lesson_runs_in_the_full_profile(full_root, tmp_path):
    data, cache = full_root
    out = tmp_path / "lessons"
    done = _run(["-m", "course_lib.lessons", "run", "--out", str(out), "--lessons", *LESSONS], _env(data, cache),
                timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for number in LESSONS:
        [path] = out.glob(f"{number}_*.ipynb")
        nb = nbformat.read(path, as_version=4)
        outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
        first = outputs[0].get("text", "") if outputs else ""
        assert first.startswith("profile: full · data: "), (path.name, first[:200])
        assert any(name in first for name in DATASET_NAMES), (path.name, first[:200])


def _empty_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "empty_data").mkdir()
    (tmp_path / "empty_cache").mkdir()
    return _env(tmp_path / "empty_data", tmp_path / "empty_cache")


@pytest.mark.parametrize("method", list(CLI_RUNS))
def test_cli_without_data_stops_with_the_fetch_command(tmp_path, method):
    args, *_ = CLI_RUNS[method]
    done = _run([*args, "--out", str(tmp_path / "run")], _empty_env(tmp_path), timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "python data_scripts/get_" in done.stderr, done.stderr[-2000:]


NEEDS_NO_DATA = {"09"}  # lesson 09 computes budgets and reads the shipped toy runs: it runs without any download


def test_lessons_without_data_stop_with_the_fetch_command(tmp_path):
    out = tmp_path / "lessons"
    _run(["-m", "course_lib.lessons", "run", "--out", str(out), "--lessons", *LESSONS], _empty_env(tmp_path),
         timeout=900)
    for number in LESSONS:
        [path] = out.glob(f"{number}_*.ipynb")
        nb = nbformat.read(path, as_version=4)
        errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
                  if o.get("output_type") == "error"]
        if number in NEEDS_NO_DATA:
            assert not errors, (path.name, errors[:1])
            continue
        assert len(errors) == 1, (path.name, len(errors))
        shown = "\n".join(errors[0]["traceback"])
        assert "python data_scripts/get_" in shown, (path.name, shown[-1500:])
        assert "Traceback" not in shown and "File " not in shown, (path.name, shown[-1500:])
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        stopped_at = next(i for i, cell in enumerate(code) if errors[0] in cell.get("outputs", []))
        assert stopped_at <= 2, (path.name, "stopped late, in code cell", stopped_at)  # parameters, set-up, data
