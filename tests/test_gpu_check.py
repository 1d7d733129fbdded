"""``benchmarks/gpu_check.py``: the CPU smoke mode runs every check and writes finite numbers; without CUDA
the real mode refuses clearly."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _numbers(value, path=""):
    """(path, number) for every number in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{path}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def test_cpu_smoke_writes_every_check(tmp_path):
    result = _run("--device", "cpu", "--smoke", "--out", str(tmp_path / "results"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = (tmp_path / "results").glob("gpu_*_smoke.json")
    report = json.loads(path.read_text())
    assert report["device"] == "cpu" and report["smoke"] is True
    stego = report["stego"]
    assert set(stego) == {"train_cached_fp32", "train_cached_bf16", "train_online_fp32", "train_online_bf16",
                          "eval_forward"}
    timed = [*stego.values(), *report["pass"].values(), *report["segsort"].values()]
    assert set(report["pass"]) == {"resnet18_imagenet_s50", "resnet50_imagenet_s300"}
    assert set(report["segsort"]) == {"resnet101_voc2012"}
    for entry in timed:
        assert entry["ms_per_step"] > 0
        assert entry["peak_memory_mb"] is None          # no CUDA: no peak memory, never a made-up number
    assert report["crf"]["torch_images_per_s"] > 0
    if "label_agreement" in report["crf"]:
        assert report["crf"]["label_agreement"] > 0.5  # the torch mean field follows pydensecrf
    evaluator = report["evaluator"]
    assert evaluator["images"] > 0 and evaluator["images_per_s"] > 0
    assert evaluator["mIoU_of_ground_truth"] == pytest.approx(evaluator["mIoU_expected"])
    numbers = list(_numbers(report))
    assert len(numbers) > 20
    assert all(math.isfinite(value) for _, value in numbers), [p for p, v in numbers if not math.isfinite(v)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_says_so_and_fails(tmp_path):
    result = _run("--out", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "no CUDA device" in result.stderr and "--device cpu --smoke" in result.stderr
    assert not list(tmp_path.glob("*.json"))
