"""The STEGO training CLI under torchrun: two CPU processes, DistributedDataParallel over gloo."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch


def test_torchrun_two_processes_with_gloo(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "course_lib.stego.train", "--out", str(out), "--n-train", "16", "--n-val", "4",
               "--size", "64", "--steps", "3", "--batch-size", "4", "--no-ablations", "--device", "cpu",
               "--threads", "1", "--crf-workers", "1"]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "COURSE_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and len(metrics["history"]) == 3
    assert 0 <= metrics["cluster_mIoU"] <= 100 and 0 <= metrics["baseline_kmeans_mIoU"] <= 100
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 3 and (out / "stego.pt").is_file()
