"""Triton-only cases, run by test_kernel_triton_interpreter.py under TRITON_INTERPRET=1 (the file
name keeps the normal run from collecting it)."""

import pytest
import torch
from kernel_helpers import interpreting

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")
from coars_fast.kernels.triton_kernels import block_offsets  # noqa: E402  (after the importorskip)

pytestmark = pytest.mark.skipif(not interpreting(), reason="needs TRITON_INTERPRET=1 set before triton is imported")


@triton.jit
def _offsets_probe(out_ptr, stride, BLOCK: tl.constexpr):
    offsets = block_offsets(tl.program_id(0), BLOCK) * stride
    tl.store(out_ptr + tl.program_id(0) * BLOCK + tl.arange(0, BLOCK), offsets)


def test_block_offsets_are_int64_before_meeting_a_stride():
    """Row offsets times a row stride pass 2^31 at real sizes (N x V = 2.5e9 at 16k x 152k); the
    kernels form every offset with block_offsets, which must widen to int64 first."""
    stride, block, programs = 151936, 64, 300  # rows up to 19,199: offsets up to 2.9e9 > 2^31
    out = torch.zeros(programs * block, dtype=torch.int64)
    _offsets_probe[(programs,)](out, stride, BLOCK=block)
    expected = torch.arange(programs * block, dtype=torch.int64) * stride
    assert int(expected.max()) > 2**31
    assert torch.equal(out, expected)


def test_float64_is_refused_by_name(monkeypatch):
    from coars_fast.kernels import token_logprobs

    monkeypatch.setenv("COARS_FAST_BACKEND", "triton")
    with pytest.raises(ValueError, match="^hidden"):
        token_logprobs(
            torch.randn(3, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2])
        )
