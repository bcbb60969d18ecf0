"""Shared test fixtures."""

import pytest


@pytest.fixture
def two_threads():
    """Run a test with torch on 2 CPU threads (CI's machine), restoring the previous setting."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)
