"""The shared CLI convention (course_lib.cli), the smoke switch, the banner and the lesson selection."""
import argparse
import json
import math

import numpy as np
import pytest
import torch

from course_lib import cli, config
from course_lib.data.folders import DatasetNotFoundError
from course_lib.lessons import select_lessons


def test_common_arguments_parse_the_convention(tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    cli.add_common_arguments(parser, out_aliases=("--work-dir",))
    args = parser.parse_args(["--work-dir", str(tmp_path / "run"), "--profile", "full", "--dataset", "voc2012",
                              "--data-root", str(tmp_path), "--device", "cpu", "--threads", "1", "--seed", "3",
                              "--max-steps", "5", "--print-config"])
    assert (args.out, args.profile, args.dataset, args.seed, args.max_steps, args.print_config) == (
        tmp_path / "run", "full", "voc2012", 3, 5, True)
    monkeypatch.delenv("COURSE_DATA", raising=False)
    cli.apply_common(args)
    assert config.data_dir() == tmp_path.resolve()
    with pytest.raises(config.ConfigError, match="--max-steps"):
        cli.apply_common(argparse.Namespace(max_steps=0, threads=None, data_root=None))


def test_cap_steps_applies_max_steps_and_the_smoke_cap(monkeypatch):
    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    assert cli.cap_steps(400) == 400 and cli.cap_steps(400, 7) == 7
    monkeypatch.setenv("COURSE_SMOKE", "1")
    assert config.smoke() and cli.cap_steps(400) == 2 and cli.cap_steps(1) == 1


def test_write_json_keeps_finite_numbers_only(tmp_path):
    path = cli.write_json(tmp_path / "m.json", {"a": float("nan"), "b": torch.tensor([1.5, float("inf")]),
                                                "c": np.float32(2.0), "d": tmp_path})
    loaded = json.loads(path.read_text())
    assert loaded == {"a": None, "b": [1.5, None], "c": 2.0, "d": str(tmp_path)}
    assert not (tmp_path / "m.json.partial").exists()
    assert all(v is None or math.isfinite(v) for v in [loaded["a"], *loaded["b"], loaded["c"]])


def test_run_cli_prints_expected_errors_without_traceback(capsys):
    def missing(argv):
        raise DatasetNotFoundError("VOC not found.\nFetch it with:\n    python data_scripts/get_voc.py")

    with pytest.raises(SystemExit) as exit_info:
        cli.run_cli(missing, [])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "python data_scripts/get_voc.py" in err and "Traceback" not in err

    def broken(argv):
        raise RuntimeError("a real bug")

    with pytest.raises(RuntimeError):  # unexpected errors keep their traceback
        cli.run_cli(broken, [])


def test_course_errors_render_as_their_message_in_notebooks():
    error = DatasetNotFoundError("CocoStuff not found.\nFetch it with:\n    python data_scripts/get_cocostuff.py")
    lines = error._render_traceback_()
    assert lines[0].startswith("DatasetNotFoundError: CocoStuff not found")
    assert lines[-1].strip() == "python data_scripts/get_cocostuff.py"


def test_banner_names_profile_data_backbone_device(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_PROFILE", "full")
    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    line = config.banner("CocoStuff-27 (val)", "dino_vits8", "cpu")
    assert line == "profile: full · data: CocoStuff-27 (val) · backbone: dino_vits8 · device: cpu"
    assert capsys.readouterr().out.strip() == line
    monkeypatch.setenv("COURSE_SMOKE", "1")
    assert config.banner("x", "y", "cpu").endswith("proves the plumbing, not the quality)")


def test_default_run_dir_lives_under_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    assert config.default_run_dir("stego", "cocostuff27", "dino_vits8") == tmp_path / "runs" / "stego_cocostuff27_dino_vits8"
    assert config.default_run_dir("segsort", "toy") == tmp_path / "runs" / "segsort_toy"


def test_select_lessons_by_number(tmp_path):
    for name in ("00_a.ipynb", "01_b.ipynb", "09_c.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in select_lessons(["9", "00"], tmp_path)] == ["00_a.ipynb", "09_c.ipynb"]
    with pytest.raises(SystemExit, match="05"):
        select_lessons(["05"], tmp_path)
