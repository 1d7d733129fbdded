from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import config


def test_profile_defaults_to_toy_and_rejects_unknown(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    assert config.profile() == "toy"
    monkeypatch.setenv("COURSE_PROFILE", "FULL")
    assert config.profile() == "full"
    monkeypatch.setenv("COURSE_PROFILE", "huge")
    with pytest.raises(config.ConfigError, match="Unknown course profile 'huge'"):
        config.profile()


def test_paths_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "c"))
    assert config.data_dir() == tmp_path / "d"
    assert config.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("COURSE_DATA")
    assert config.data_dir() == config.project_root() / "data"
    assert (Path(config.__file__).parents[1] / "pyproject.toml").is_file()


@pytest.mark.parametrize("value", ["gpu", "GPU:0", "cuda0", "cuda:x", "cuda:-1", "tpu", "cpu,cuda", " "])
def test_a_bad_course_device_names_the_variable_the_value_and_the_allowed_forms(monkeypatch, value):
    monkeypatch.setenv("COURSE_DEVICE", value)
    with pytest.raises(config.ConfigError) as caught:
        config.get_device()
    message = str(caught.value)
    assert f"COURSE_DEVICE={value.strip().lower()!r} is not a valid device" in message
    assert "cpu, cuda, cuda:N" in message and "mps" in message


def test_a_bad_device_argument_is_named_as_such(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    with pytest.raises(config.ConfigError, match=r"device 'gpu' \(--device option or device argument\) is not"):
        config.get_device("gpu")
    assert config.get_device(" CPU ").type == "cpu" and config.get_device().type == "cpu"


def test_device_choice(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else None
    device = config.get_device()
    assert device.type == (expected or device.type)
    assert config.get_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(config.ConfigError, match="CUDA is not available"):
            config.get_device("cuda")


def test_seed_everything_repeats_random_streams():
    config.seed_everything(3)
    first = (torch.rand(3), np.random.rand(3))
    config.seed_everything(3)
    second = (torch.rand(3), np.random.rand(3))
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def test_progress_respects_tqdm_disable(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    bar = config.progress(range(3))
    assert bar.disable and list(bar) == [0, 1, 2]
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not config.progress_disabled()


def test_environment_report_has_no_absolute_project_paths(monkeypatch):
    monkeypatch.delenv("COURSE_DATA", raising=False)
    monkeypatch.delenv("COURSE_CACHE", raising=False)
    report = config.environment_report()
    assert report["COURSE_DATA"] == "./data" and report["COURSE_CACHE"] == "./.cache"
    assert report["torch"].startswith("2.") and report["pydensecrf"] == "ok"
