"""Backend dispatch: the default per device, COARS_FAST_BACKEND, the loud fallback, a cheap import."""

import os
import subprocess
import sys
import warnings

import pytest
import torch
from kernel_helpers import BACKEND_ENV, cpu_extension_built, interpreting

import coars_fast.kernels.backend_cpu as backend_cpu
import coars_fast.kernels.backends as backends
from coars_fast.kernels import active_backend, token_logprobs

pytestmark = pytest.mark.skipif(interpreting(), reason="dispatch is tested in the normal run")


@pytest.fixture(autouse=True)
def no_forced_backend(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)


def test_cpu_extension_is_built_in_ci():
    """The fast CPU path must not be silently off where it is expected (CI builds it)."""
    if not os.environ.get("CI") and not cpu_extension_built():
        pytest.skip("C++ extension not built here")
    assert cpu_extension_built(), backend_cpu.unavailable_reason(torch.device("cpu"))
    assert active_backend("cpu") == "cpu"


def test_other_devices_use_torch():
    assert active_backend("meta") == "torch"


@pytest.mark.parametrize("name", ["torch", "reference"])
def test_forcing_a_backend(monkeypatch, name):
    monkeypatch.setenv(BACKEND_ENV, name)
    assert active_backend("cpu") == name


def test_unknown_backend_is_a_value_error(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "cuda-magic")
    with pytest.raises(ValueError, match=BACKEND_ENV):
        active_backend("cpu")


def test_forced_backend_that_cannot_run_is_an_error(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "triton")
    with pytest.raises(RuntimeError, match="triton"):
        active_backend("cpu")
    monkeypatch.setenv(BACKEND_ENV, "cpu")
    with pytest.raises(RuntimeError, match="cpu"):
        active_backend("meta")


def test_missing_extension_falls_back_to_torch_with_one_warning(monkeypatch):
    monkeypatch.setattr(backend_cpu, "_load_error", "not built (simulated)")
    monkeypatch.setattr(backends, "_warned", set())
    with pytest.warns(RuntimeWarning, match=r"cpu backend is unavailable.*not built \(simulated\).*torch"):
        assert active_backend("cpu") == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert active_backend("cpu") == "torch"  # said once, not on every call
        logp = token_logprobs(torch.randn(3, 4), torch.randn(7, 4), torch.tensor([1, 2, 3]))
    assert logp.shape == (3,) and bool((logp <= 0).all())


def test_import_is_cheap_and_self_contained():
    code = (
        "import sys, coars_fast.kernels; "
        "heavy = [m for m in ('transformers', 'peft', 'triton', 'coars_fast.data') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_backend_keeps_16_bit_gemm_logits_in_fp32(monkeypatch):
    """With 16-bit GEMMs (the torch backend on a GPU; forced here on CPU), the logits reach the
    softmax statistics in fp32: the target logit and row max equal the fp32 product of the same
    bf16 values, not that product rounded to bf16 (about 0.4% off)."""
    import coars_fast.kernels.backend_torch as backend_torch

    monkeypatch.setattr(backend_torch, "gemm_dtype", lambda dtype, device: dtype)
    seed = int.from_bytes(os.urandom(2), "little")
    print(f"seed {seed}")
    gen = torch.Generator().manual_seed(seed)
    n, d, vocab, inv_temperature = 37, 64, 1001, 1 / 0.7
    hidden = torch.randn(n, d, generator=gen).to(torch.bfloat16)
    weight = torch.randn(vocab, d, generator=gen).to(torch.bfloat16)
    targets = torch.randint(0, vocab, (n,), generator=gen)
    partials, _ = backend_torch.vocab_partials(hidden, None, weight, targets, inv_temperature, False, False)
    logits = (hidden.double() @ weight.double().t()) * inv_temperature  # the exact product of the bf16 values
    for got, want in ((partials[0, 2], logits.gather(1, targets[:, None])[:, 0]), (partials[0, 0], logits.amax(1))):
        assert got.dtype == torch.float32
        error = ((got.double() - want).norm() / want.norm()).item()
        assert error < 1e-6, f"relative error {error:.2e}: the logits were rounded below fp32"


def test_triton_tiles_are_tuned_once_per_shape_and_gpu(monkeypatch):
    """On CUDA each Triton kernel runs with the fastest of its candidate tile configs, timed on the
    call's own inputs once per (kernel, D, V, dtype, GPU); a config that cannot launch is skipped;
    COARS_FAST_AUTOTUNE=0 keeps the H200 pick. Timed by a fake timer here (no GPU needed)."""
    from coars_fast.kernels import backend_triton as bt

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("COARS_FAST_AUTOTUNE", raising=False)
    monkeypatch.setattr(bt, "_picked", {})
    candidates = [bt.CUDA_CONFIGS["partials"], *(c for c in bt.CUDA_CANDIDATES if c != bt.CUDA_CONFIGS["partials"])]
    assert len(candidates) >= 4
    seconds = {i: 1.0 + i for i in range(len(candidates))}
    seconds[3] = 0.5  # the fastest
    ran = []

    def run(config):
        ran.append(candidates.index(config))
        if config is candidates[2]:
            raise RuntimeError("out of resources: shared memory")  # this tile does not fit the GPU
        return f"result of {candidates.index(config)}"

    def timer(fn):
        fn()
        return seconds[ran[-1]]

    key = (896, 151936, torch.bfloat16, "some GPU")
    assert bt._tuned("partials", key, run, timer) == "result of 3"
    assert ran == [*range(len(candidates)), 3]  # every candidate timed once, then the pick
    ran.clear()
    assert bt._tuned("partials", key, run, timer) == "result of 3" and ran == [3]  # remembered
    ran.clear()
    bt._tuned("partials", (4096, 151936, torch.bfloat16, "some GPU"), run, timer)  # another shape: timed
    assert len(ran) == len(candidates) + 1
    ran.clear()
    monkeypatch.setenv("COARS_FAST_AUTOTUNE", "0")
    assert bt._tuned("partials", (5, 7, torch.float32, "x"), run, timer) == "result of 0" and ran == [0]
