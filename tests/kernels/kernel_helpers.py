"""Shared helpers of the kernel tests: which backends to test, random inputs, error reports, and
the `gen` and `backend` fixtures (imported by the test modules that use them: a conftest.py here
would shadow tests/conftest.py, which other tests import by module name)."""

import importlib.util
import os

import pytest
import torch

from coars_fast.kernels.backends import backend_module

BACKEND_ENV = "COARS_FAST_BACKEND"
IGNORE = -100


def interpreting():
    """True inside the TRITON_INTERPRET=1 subprocess (test_kernel_triton_interpreter.py)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def cpu_extension_built():
    return backend_module("cpu").unavailable_reason(torch.device("cpu")) is None


def backends_under_test():
    """Every backend this machine can run: the interpreter subprocess tests the two Triton ones; a
    normal run tests the C++ extension (when built), the torch fallback, and those two on CUDA."""
    if interpreting():
        return ["triton", "gemm"]
    names = (["cpu"] if cpu_extension_built() else []) + ["torch"]
    if torch.cuda.is_available() and importlib.util.find_spec("triton") is not None:
        names += ["triton", "gemm"]
    return names


def device_for(backend):
    return "cuda" if backend in ("triton", "gemm") and not interpreting() else "cpu"


def errors(got, want):
    """(max |a - b|, ||a - b|| / ||b||) in float64."""
    diff = got.detach().double() - want.detach().double()
    scale = want.detach().double().norm().clamp_min(1e-300)
    return diff.abs().max().item() if diff.numel() else 0.0, (diff.norm() / scale).item()


def assert_close(got, want, rel_tol, what):
    assert got.shape == want.shape, f"{what}: shape {list(got.shape)} != {list(want.shape)}"
    max_abs, rel = errors(got, want)
    assert rel <= rel_tol, f"{what}: max|a-b| = {max_abs:.3e}, relative norm = {rel:.3e} > {rel_tol:.0e}"


def random_problem(gen, n, d, vocab, *, dtype=torch.float32, device="cpu", ignored_every=7):
    """Student/teacher hidden states, an LM head giving logits of spread ~3, targets with every
    `ignored_every`-th row ignored, and per-row rewards / token weights; all drawn from `gen`."""

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype).to(device)

    targets = torch.randint(0, vocab, (n,), generator=gen)
    if ignored_every:
        targets[::ignored_every] = IGNORE
    return dict(
        hidden=randn(n, d),
        teacher_hidden=randn(n, d),
        weight=randn(vocab, d, scale=3.0 / d**0.5),
        targets=targets.to(device),
        rewards=randn(n),
        token_weights=(torch.rand(n, generator=gen, dtype=torch.float64) + 0.1).to(device),
    )


def as_float64(problem):
    return {k: v.detach().double() if v.is_floating_point() else v for k, v in problem.items()}


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
