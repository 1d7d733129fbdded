"""The STEGO training CLI on the course's convention: --print-config, missing downloads, the smoke dry run
that prepares its own five-crop set, kNN table and feature caches and reuses them."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib.stego.train import main as train_main

from full_data_root import IMAGE_SIZE, write_random_weights
from test_stego_train import make_stego_cocostuff

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def full_env(tmp_path, monkeypatch):
    """Full profile, smoke, empty COURSE_DATA / COURSE_CACHE under ``tmp_path``."""
    for name, value in (("COURSE_PROFILE", "full"), ("COURSE_SMOKE", "1"), ("COURSE_DATA", str(tmp_path / "data")),
                        ("COURSE_CACHE", str(tmp_path / "cache")), ("TQDM_DISABLE", "1")):
        monkeypatch.setenv(name, value)
    return tmp_path


def printed_config(capsys, *argv: str) -> dict:
    assert train_main(["--print-config", *argv]) is None
    return json.loads(capsys.readouterr().out)


def test_print_config_resolves_presets_smoke_and_caps_and_loads_nothing(full_env, capsys, monkeypatch):
    # nothing is downloaded: loading weights or data would raise, so printing proves it loads neither
    smoke = printed_config(capsys, "--dataset", "cocostuff27", "--backbone", "dino_vits8")
    assert smoke["profile"] == "full" and smoke["smoke"] is True
    assert smoke["out"] == str(full_env / "cache" / "runs" / "stego_cocostuff27_dino_vits8")
    assert (smoke["stego"]["steps"], smoke["stego"]["resolution"], smoke["stego"]["val_resolution"]) == (2, 64, 64)
    assert smoke["stego"]["b_rand"] == 0.66 and smoke["stego"]["five_crop"] is True
    assert (smoke["data"]["n_train"], smoke["data"]["n_val"], smoke["data"]["online"]) == (8, 8, True)
    assert smoke["data"]["data_root"] == str(full_env / "data") and smoke["run"]["ablations"] is False
    monkeypatch.delenv("COURSE_SMOKE")
    full = printed_config(capsys, "--dataset", "cityscapes27", "--data-root", str(full_env / "elsewhere"),
                          "--steps", "300", "--max-steps", "40", "--batch-size", "8", "--out", str(full_env / "o"))
    assert full["stego"]["backbone"] == "dino_vitb8" and full["stego"]["b_self"] == 0.45828472207
    assert (full["stego"]["steps"], full["stego"]["batch_size"]) == (40, 8)
    assert (full["stego"]["resolution"], full["stego"]["val_resolution"]) == (224, 320)
    assert full["data"]["n_train"] is None and full["data"]["data_root"] == str(full_env / "elsewhere")
    # official validation and checkpoint selection (train_config.yml:167, train_segmentation.py:487-492)
    assert full["run"]["checkpoint_selection"] == {"val_freq": 100, "select_every": 400, "save_top_k": 2}
    assert smoke["run"]["checkpoint_selection"]["val_freq"] == 1
    toy = printed_config(capsys, "--profile", "toy")
    assert (toy["stego"]["dataset"], toy["stego"]["steps"], toy["data"]["n_train"], toy["run"]["ablations"]) == \
        ("toy", 400, 1000, True)
    assert toy["run"]["checkpoint_selection"]["val_freq"] == 0  # the toy lessons evaluate the last step
    assert not (full_env / "cache").exists() and not (full_env / "o").exists()


def run_cli(env_dir: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COURSE_PROFILE": "full", "COURSE_DATA": str(env_dir / "data"),
           "COURSE_CACHE": str(env_dir / "cache"), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "course_lib.stego.train", *argv], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_missing_weights_stop_at_once_with_the_fetch_command(tmp_path):
    result = run_cli(tmp_path, "--dataset", "cocostuff27", "--backbone", "dino_vits8", "--out", str(tmp_path / "o"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "python data_scripts/get_weights.py --model dino_vits8" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_dataset_stops_at_once_with_the_fetch_command(tmp_path):
    # the shipped toy backbone needs no download, so the first missing piece is the dataset
    result = run_cli(tmp_path, "--dataset", "cocostuff27", "--backbone", "toy_vit", "--out", str(tmp_path / "o"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "python data_scripts/get_cocostuff.py" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "cropped").exists()


def test_smoke_run_prepares_five_crop_knn_and_caches_then_reuses_them(full_env, monkeypatch):
    for split, seed in (("train", 10), ("val", 0)):
        make_stego_cocostuff(full_env / "data", split, n_images=3, size=IMAGE_SIZE, seed=seed)
    write_random_weights(full_env / "cache" / "weights", dino_models=("dino_vits8",), resnets=())
    out = full_env / "run"
    argv = ["--dataset", "cocostuff27", "--backbone", "dino_vits8", "--out", str(out), "--crf-workers", "1"]
    first = train_main(argv)
    for name in ("config.json", "metrics.json", "stego.pt", "checkpoint.pt"):
        assert (out / name).is_file(), name
    assert (full_env / "data" / "cropped" / "cocostuff27_five_crop_0.5" / "index" / "train.csv").is_file()
    knn = full_env / "cache" / "stego" / "knn" / "dino_vits8" / "cocostuff27_fivecrop_n3_res64_dropout0.1_seed0.npy"
    assert knn.is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_train"] == 15 and saved["n_val"] == 3 and len(saved["history"]) == 2 and saved["smoke"]
    # smoke validates and selects at every step: the route of the official checkpoint selection ran
    assert [point["step"] for point in saved["validation_curve"]] == [1, 2]
    assert saved["selected_step"] in (1, 2) and "labelled validation set" in saved["selection"]
    assert (out / f"best_step{saved['selected_step']}.pt").is_file()
    assert 0 <= saved["cluster_mIoU"] <= 100 and saved["config"]["resolution"] == 64

    def refuse(what):
        def fail(*args, **kwargs):
            raise AssertionError(f"{what} again")
        return fail

    # the second run prepares nothing and trains nothing: five-crop, kNN descriptors, training are reused
    monkeypatch.setattr(importlib.import_module("course_lib.data.five_crop"), "prepare_five_crop", refuse("five-crop"))
    monkeypatch.setattr("course_lib.stego.experiment.dataset_features", refuse("kNN descriptors"))
    monkeypatch.setattr("course_lib.models.features.extract_features", refuse("feature extraction"))
    monkeypatch.setattr("course_lib.stego.experiment.train_stego", refuse("training"))
    second = train_main(argv)
    assert second["cluster_mIoU"] == first["cluster_mIoU"] and second["history"] == first["history"]
