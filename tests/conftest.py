"""Shared pytest fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny tensors only lose from threading on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def empty_course_folders(tmp_path, monkeypatch):
    """Empty ``COURSE_DATA`` and ``COURSE_CACHE`` folders under ``tmp_path`` (returned), set in the environment."""
    for name in ("COURSE_DATA", "COURSE_CACHE"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    return tmp_path
