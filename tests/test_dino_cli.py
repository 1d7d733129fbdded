"""The DINO CLI (the toy backbone's training) on the course's convention."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_lib.config import ConfigError
from course_lib.models.backbones import load_backbone
from course_lib.ssl.dino import load_toy_vit, main

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    return tmp_path


def test_print_config_applies_smoke_flags_and_caps_and_writes_nothing(env, capsys, monkeypatch):
    monkeypatch.setenv("COURSE_SMOKE", "1")
    assert main(["--print-config", "--seed", "3"]) is None
    smoke = json.loads(capsys.readouterr().out)
    assert (smoke["dino"]["n_train_images"], smoke["dino"]["batch_size"], smoke["dino"]["epochs"]) == (8, 4, 1)
    assert smoke["run"]["steps"] == 2 and smoke["dino"]["seed"] == 3 and smoke["dino"]["embed_dim"] == 128
    assert smoke["out"] == str(env / "cache" / "runs" / "dino_toy_toy_vit")
    monkeypatch.delenv("COURSE_SMOKE")
    main(["--print-config", "--epochs", "3", "--max-steps", "5", "--batch-size", "16", "--out", str(env / "o")])
    capped = json.loads(capsys.readouterr().out)
    assert (capped["dino"]["epochs"], capped["dino"]["batch_size"], capped["run"]["steps"]) == (3, 16, 5)
    assert capped["dino"]["n_train_images"] == 2000 and not (env / "o").exists() and not (env / "cache").exists()
    with pytest.raises(ConfigError, match="--dataset toy"):
        main(["--print-config", "--dataset", "cocostuff27"])


def test_full_profile_says_to_fetch_the_official_weights_without_traceback(tmp_path):
    env = {**os.environ, "COURSE_PROFILE": "full", "COURSE_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "course_lib.ssl.dino", "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert "python data_scripts/get_weights.py --model dino_vits8" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o").exists()


def test_smoke_run_writes_config_metrics_and_a_loadable_backbone_and_resumes(env, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_SMOKE", "1")
    out = env / "run"
    metrics = main(["--out", str(out), "--device", "cpu", "--data-root", str(env / "unused")])
    assert json.loads((out / "config.json").read_text())["run"]["steps"] == 2
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics)) and saved["steps"] == 2 and saved["epochs_done"] == 1
    assert math.isfinite(saved["final_loss"])
    backbone = load_toy_vit(out / "toy_vit.pt")
    assert backbone.embed_dim == load_backbone("toy_vit").embed_dim  # the toy architecture, trained 2 steps
    written = (out / "metrics.json").read_bytes()
    again = main(["--out", str(out), "--device", "cpu"])  # finished: reported, nothing trained or rewritten
    assert "already holds this run, finished" in capsys.readouterr().out
    assert again == saved and (out / "metrics.json").read_bytes() == written
    one = main(["--out", str(env / "one"), "--device", "cpu", "--max-steps", "1"])
    assert one["steps"] == 1 and one["epochs_done"] == 1
    optimizer = torch.load(env / "one" / "checkpoint.pt", weights_only=False)["optimizer"]
    assert {float(state["step"]) for state in optimizer["state"].values()} == {1.0}  # one AdamW step, not two
