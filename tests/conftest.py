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
