"""Weight files you can trust (issue 20, point 3): ``get_weights.py`` verifies a file before it says the file is
there and replaces a bad one; the loaders report a bad file with its path and the fetch command, never torch's
traceback; a bad ``COURSE_DEVICE`` is named.

Every bad file of the issue is tried: random bytes, a truncated file, an empty file, a directory, and a state dict
of another architecture, against a local HTTP server (the one of the download tests) that holds the good file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_data_scripts import official_weights_bytes, run_data_script, server  # noqa: E402,F401  (fixture)

from course_lib.config import CourseError  # noqa: E402
from course_lib.data import hub  # noqa: E402
from course_lib.data.download import DownloadError, part_path, record_path  # noqa: E402
from course_lib.data.prepare import prepare_weights  # noqa: E402
from course_lib.models import WeightsNotFoundError, load_backbone  # noqa: E402
from course_lib.models.backbones import CorruptWeightsError  # noqa: E402
from course_lib.models.resnet import build_resnet, load_imagenet_weights  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::course_lib.data.download.UnverifiedDownloadWarning")

BAD_FILES = ["garbage", "truncated", "empty", "directory", "wrong_architecture"]
# what get_weights.py and the loaders say about each (a part of the reason)
REASONS = {"garbage": "not a PyTorch weight file", "truncated": "truncated", "empty": "empty (0 bytes)",
           "directory": "is a directory", "wrong_architecture": "do not match the architecture"}
OTHER_ARCHITECTURE = {"dino_vits16": "dino_vitb16", "resnet18": "resnet50"}


def write_bad_file(path: Path, kind: str, model: str) -> None:
    """Put the bad file ``kind`` at ``path`` where the weights of ``model`` belong."""
    path.parent.mkdir(parents=True, exist_ok=True)
    good = official_weights_bytes(model)
    if kind == "garbage":
        path.write_bytes(random.Random(0).randbytes(5000))   # fixed bytes: the same failure on every run
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind == "wrong_architecture":
        path.write_bytes(official_weights_bytes(OTHER_ARCHITECTURE[model]))


# ----------------------------------------------------------------------------------------- get_weights.py

@pytest.mark.parametrize("kind", BAD_FILES)
def test_get_weights_replaces_a_bad_file_and_says_so(server, tmp_path, kind):
    payload = official_weights_bytes("dino_vits16")
    server.files["dino_deitsmall16_pretrain.pth"] = payload
    target = tmp_path / "cache" / "weights" / "dino_deitsmall16_pretrain.pth"
    write_bad_file(target, kind, "dino_vits16")
    result = run_data_script("get_weights.py", "--model", "dino_vits16", mirror=server.base_url, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "already present" not in result.stdout
    assert f"[redo] {target} exists but" in result.stdout and REASONS[kind] in result.stdout
    assert target.read_bytes() == payload and len(server.requests_for(target.name)) == 1
    assert record_path(target).read_text().split()[0] == hashlib.sha256(payload).hexdigest()


def test_get_weights_replaces_a_file_that_changed_since_its_download(server, tmp_path):
    payload = official_weights_bytes("dino_vits16")
    server.files["dino_deitsmall16_pretrain.pth"] = payload
    first = run_data_script("get_weights.py", "--model", "dino_vits16", mirror=server.base_url, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    target = tmp_path / "cache" / "weights" / "dino_deitsmall16_pretrain.pth"
    damaged = bytearray(payload)
    damaged[len(damaged) // 2] ^= 0xFF          # one flipped byte: still loads, but not the file downloaded
    target.write_bytes(bytes(damaged))
    again = run_data_script("get_weights.py", "--model", "dino_vits16", mirror=server.base_url, tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"[redo] {target} exists but its sha256" in again.stdout
    assert "recorded when it was downloaded" in again.stdout
    assert target.read_bytes() == payload and len(server.requests_for(target.name)) == 2


def test_get_weights_keeps_a_verified_file_and_force_downloads_it_again(server, tmp_path):
    served = official_weights_bytes("dino_vits16")
    server.files["dino_deitsmall16_pretrain.pth"] = served
    target = tmp_path / "cache" / "weights" / "dino_deitsmall16_pretrain.pth"
    target.parent.mkdir(parents=True)
    mine = torch.load(io.BytesIO(served), weights_only=True)
    mine["norm.bias"] = mine["norm.bias"] + 1
    torch.save(mine, target)                     # a good file put there by hand: no record yet
    kept = run_data_script("get_weights.py", "--model", "dino_vits16", mirror=server.base_url, tmp_path=tmp_path)
    assert kept.returncode == 0, kept.stderr
    assert "already present" in kept.stdout and "recorded now" in kept.stdout and not server.log
    assert record_path(target).read_text().split()[0] == hashlib.sha256(target.read_bytes()).hexdigest()

    forced = run_data_script("get_weights.py", "--model", "dino_vits16", "--force", mirror=server.base_url,
                             tmp_path=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert f"[force] downloading {target} again" in forced.stdout
    assert target.read_bytes() == served and len(server.requests_for(target.name)) == 1
    assert record_path(target).read_text().split()[0] == hashlib.sha256(served).hexdigest()


def test_get_weights_rejects_a_download_that_is_not_the_architecture(server, tmp_path):
    server.files["dino_deitsmall16_pretrain.pth"] = official_weights_bytes("dino_vitb16")
    failed = run_data_script("get_weights.py", "--model", "dino_vits16", mirror=server.base_url, tmp_path=tmp_path)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "dino_deitsmall16_pretrain.pth gave a file that is not usable" in failed.stderr
    assert "do not match the architecture" in failed.stderr and "shape mismatch" in failed.stderr
    target = tmp_path / "cache" / "weights" / "dino_deitsmall16_pretrain.pth"
    assert not target.exists() and not part_path(target).exists() and not record_path(target).exists()


def test_get_weights_never_deletes_a_directory_with_files_in_it(server, tmp_path):
    server.files["dino_deitsmall16_pretrain.pth"] = official_weights_bytes("dino_vits16")
    target = tmp_path / "cache" / "weights" / "dino_deitsmall16_pretrain.pth"
    (target / "notes.txt").parent.mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    failed = run_data_script("get_weights.py", "--model", "dino_vits16", mirror=server.base_url, tmp_path=tmp_path)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert f"{target} is a directory with files in it" in failed.stderr and "move it away" in failed.stderr
    assert (target / "notes.txt").read_text() == "mine" and not server.log


@pytest.mark.parametrize("kind", BAD_FILES)
def test_prepare_weights_replaces_a_bad_resnet_file(server, tmp_path, kind):
    payload = official_weights_bytes("resnet18")
    server.files["resnet18-f37072fd.pth"] = payload
    entry = dataclasses.replace(hub.WEIGHTS["resnet18"], sha256=hashlib.sha256(payload).hexdigest()[:8])
    target = tmp_path / "weights" / "resnet18-f37072fd.pth"
    write_bad_file(target, kind, "resnet18")
    paths = prepare_weights(["resnet18"], tmp_path / "weights", files={"resnet18": entry}, mirror=server.base_url,
                            progress=False)
    assert paths["resnet18"] == target and target.read_bytes() == payload


def test_prepare_weights_rejects_a_resnet_download_of_another_architecture(server, tmp_path):
    payload = official_weights_bytes("resnet50")           # the right checksum prefix, the wrong network
    server.files["resnet18-f37072fd.pth"] = payload
    entry = dataclasses.replace(hub.WEIGHTS["resnet18"], sha256=hashlib.sha256(payload).hexdigest()[:8])
    with pytest.raises(DownloadError, match="not usable: its keys or shapes do not match"):
        prepare_weights(["resnet18"], tmp_path / "weights", files={"resnet18": entry}, mirror=server.base_url,
                        progress=False)
    assert not (tmp_path / "weights" / "resnet18-f37072fd.pth").exists()


# --------------------------------------------------------------------------------------------------- loaders

def load_dino(weights_dir: Path) -> None:
    load_backbone("dino_vits16", weights_dir=weights_dir)


def load_resnet(weights_dir: Path) -> None:
    load_imagenet_weights(build_resnet("resnet18"), "resnet18", weights_dir)


LOADERS = {"dino_vits16": load_dino, "resnet18": load_resnet}


@pytest.mark.parametrize("kind", BAD_FILES)
@pytest.mark.parametrize("model", list(LOADERS))
def test_loaders_name_a_bad_file_and_the_command_that_replaces_it(tmp_path, model, kind):
    target = hub.weights_path(model, tmp_path)
    write_bad_file(target, kind, model)
    with pytest.raises(CorruptWeightsError) as caught:
        LOADERS[model](tmp_path)
    message = str(caught.value)
    assert isinstance(caught.value, WeightsNotFoundError) and isinstance(caught.value, CourseError)
    assert str(target) in message and REASONS[kind] in message
    assert f"python data_scripts/get_weights.py --model {model} --force" in message
    assert "weights_only=False" not in message           # torch's advice to run the file's code is never passed on


def test_loaders_accept_a_good_file(tmp_path):
    for model, loader in LOADERS.items():
        target = hub.weights_path(model, tmp_path)
        target.write_bytes(official_weights_bytes(model))
        loader(tmp_path)


def test_a_missing_file_still_gives_the_plain_fetch_command(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="get_weights.py --model resnet18$") as caught:
        load_resnet(tmp_path)
    assert not isinstance(caught.value, CorruptWeightsError)


# ------------------------------------------------------------------------------------------- COURSE_DEVICE

def test_a_cli_with_a_bad_course_device_names_the_variable_without_a_traceback(tmp_path):
    env = {**os.environ, "COURSE_DEVICE": "gpu", "COURSE_SMOKE": "1", "TQDM_DISABLE": "1",
           "COURSE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "course_lib.ssl.dino", "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "COURSE_DEVICE='gpu' is not a valid device" in result.stderr and "cuda:N" in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
