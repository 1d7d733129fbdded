"""The SegSort training CLI under torchrun: two CPU processes, DistributedDataParallel over gloo."""
from __future__ import annotations

import json
import os
import subprocess
import sys

TINY = ["--n-train", "16", "--n-val", "4", "--size", "64", "--batch-size", "8", "--device", "cpu", "--threads", "1"]


def test_torchrun_two_processes_with_gloo(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "course_lib.segsort.train", "--out", str(tmp_path), "--epochs", "1", "--no-eval", *TINY]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and len(metrics["losses"]) == 1
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "segsort.pt").is_file()
