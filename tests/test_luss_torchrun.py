"""PASS pre-training under torchrun: two gloo processes on the CPU, each with its own share and queue."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from course_lib.luss.pipeline import settings_for


def test_pretrain_on_two_gloo_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    command = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "course_lib.luss", "pretrain",
               "--profile", "toy", "--work-dir", str(tmp_path), "--device", "cpu",
               "--set", "toy_images=[16,8]", "--set", "pretrain.batch_size=4", "--set", "pretrain.epochs=1",
               "--set", "pretrain.queue_length=8", "--set", "pretrain.epoch_queue_starts=0"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(tmp_path / "pretrain" / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1 and len(state["history"]) == 16 // (4 * 2)  # each process: half the images
    queues = [torch.load(tmp_path / "pretrain" / f"queue{rank}.pt")["embeddings"] for rank in (0, 1)]
    assert queues[0].shape == (2, 4, settings_for("toy").pretrain.feat_dim)  # a queue of 8 over 2 processes
    assert not torch.equal(queues[0], queues[1])  # different images on each process
