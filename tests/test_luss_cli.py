"""The PASS command line on the course's convention: --print-config, --out / --work-dir, the run folder's
config.json and metrics.json, a missing dataset, COURSE_SMOKE on an ImageNet-S subset, reuse of results."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fake_datasets import make_imagenet_s

from course_lib.config import ConfigError, default_run_dir
from course_lib.data.label_png import read_imagenet_s_png
from course_lib.luss.pipeline import SMOKE_IMAGES, main

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def empty_course(empty_course_folders, tmp_path, monkeypatch):
    """Empty data and cache folders, the full profile, no smoke."""
    monkeypatch.setenv("COURSE_PROFILE", "full")
    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    return tmp_path


def printed_config(capsys, *args: str) -> dict:
    assert main(["pipeline", "--print-config", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_print_config_resolves_everything_and_reads_nothing(empty_course, capsys):
    config = printed_config(capsys, "--dataset", "imagenet_s50", "--device", "cpu", "--seed", "3")
    assert config["out"] == str(default_run_dir("pass", "imagenet_s50", "resnet18"))
    assert (config["profile"], config["dataset"], config["smoke"], config["device"]) == ("full", "imagenet_s50",
                                                                                          False, "cpu")
    settings = config["settings"]
    assert (settings["pretrain"]["arch"], settings["pretrain"]["epochs"], settings["tau"]) == ("resnet18", 200, 0.41)
    assert {settings[section]["seed"] for section in ("pretrain", "attention", "finetune")} == {3}
    assert not any((empty_course / "COURSE_CACHE").iterdir())  # no dataset read, no run folder made


def test_print_config_under_smoke_shows_the_tiny_sizes(empty_course, capsys, monkeypatch):
    monkeypatch.setenv("COURSE_SMOKE", "1")
    settings = printed_config(capsys, "--dataset", "imagenet_s300")["settings"]
    assert settings["pretrain"]["arch"] == "resnet50"  # same network, same code paths
    assert [c["size"] for c in settings["pretrain"]["crops"]] == [64] and settings["finetune"]["crop_size"] == 64
    assert settings["max_images"] == [SMOKE_IMAGES, SMOKE_IMAGES] and settings["pretrain"]["epochs"] == 1
    assert (settings["cluster_short_side"], settings["label_short_side"]) == (64, 64)


def test_out_and_work_dir_are_the_same_option(empty_course, capsys):
    run = str(empty_course / "run")
    by_out = printed_config(capsys, "--dataset", "imagenet_s50", "--out", run)
    by_work_dir = printed_config(capsys, "--dataset", "imagenet_s50", "--work-dir", run)
    assert by_out == by_work_dir and by_out["out"] == run


def test_missing_dataset_stops_at_once_with_the_fetch_command(empty_course):
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    run = empty_course / "run"
    done = subprocess.run([sys.executable, "-m", "course_lib.luss", "pipeline", "--dataset", "imagenet_s50",
                           "--out", str(run)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "python data_scripts/get_imagenet_s.py" in done.stderr and "--subset 50" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (run / "config.json").exists() and not (run / "pretrain").exists()


def test_a_step_before_the_one_it_needs_names_that_step(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_SMOKE", "1")
    with pytest.raises(ConfigError, match="run `python -m course_lib.luss pretrain --out"):
        main(["attention", "--profile", "toy", "--out", str(tmp_path / "run"), "--device", "cpu"])


def test_smoke_pipeline_on_an_imagenet_s_subset_writes_and_reuses_its_run(tmp_path, monkeypatch, capsys):
    """COURSE_SMOKE on a fake ImageNet-S50 of 6 + 6 images: 4 + 4 of them, spread over the categories, at
    most 2 iterations per training step; the evaluation runs on the subset's copied ground truth; a re-run
    reuses every result; a full-size run refuses the smoke run's folder."""
    data, run = tmp_path / "data", tmp_path / "run"
    for split, seed in (("train", 1), ("validation", 2)):
        make_imagenet_s(data, 50, split, used_classes=(1, 2, 3), per_class=2, size=(40, 52), seed=seed)
    monkeypatch.setenv("COURSE_SMOKE", "1")
    args = ["pipeline", "--dataset", "imagenet_s50", "--data-root", str(data), "--out", str(run), "--device", "cpu"]
    assert main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(0 <= metrics[key]["mIoU"] <= 100 for key in ("finetuned", "pseudo_labels", "baseline_no_attention"))
    assert all(1 <= metrics["training"][step]["iterations"] <= 2 for step in ("pretrain", "attention", "finetune"))
    assert json.loads((run / "config.json").read_text())["smoke"] is True
    ground_truth = sorted(p.relative_to(run / "subset" / "validation-segmentation")
                          for p in (run / "subset" / "validation-segmentation").glob("*/*.png"))
    predictions = sorted(p.relative_to(run / "predictions" / "validation")
                         for p in (run / "predictions" / "validation").glob("*/*.png"))
    assert len(ground_truth) == SMOKE_IMAGES and predictions == ground_truth
    assert len({path.parent for path in ground_truth}) == 3  # spread over the categories
    assert read_imagenet_s_png(run / "predictions" / "validation" / predictions[0]).shape == (40, 52)
    assert len(list((run / "labels" / "train").glob("*/*.png"))) == SMOKE_IMAGES
    capsys.readouterr()
    before = {step: torch.load(run / step / "checkpoint.pt", weights_only=False)["history"]
              for step in ("pretrain", "attention", "finetune")}
    labels_time = (run / "labels" / "tau.json").stat().st_mtime
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[cluster] reused" in out and "[labels] reused" in out
    assert (run / "labels" / "tau.json").stat().st_mtime == labels_time
    assert all(torch.load(run / step / "checkpoint.pt", weights_only=False)["history"] == history
               for step, history in before.items())
    assert main([*args, "--tau", "0.2"]) == 0  # a new τ redoes the labels, not the clustering
    out = capsys.readouterr().out
    assert "[cluster] reused" in out and "[labels] done" in out and "settings changed" in out
    monkeypatch.delenv("COURSE_SMOKE")
    with pytest.raises(ConfigError, match="holds a smoke"):
        main(args)
