import os

import pytest
import torch

from kernel_helpers import BACKEND_ENV, backends_under_test


@pytest.fixture
def gen():
    """A generator with a fresh seed each run (printed, so a failure can be replayed)."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"random seed: {seed}")
    return torch.Generator().manual_seed(seed)


@pytest.fixture(params=backends_under_test())
def backend(request, monkeypatch):
    """Runs the test once per available backend, forced through COARS_FAST_BACKEND."""
    monkeypatch.setenv(BACKEND_ENV, request.param)
    return request.param
