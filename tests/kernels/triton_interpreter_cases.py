"""Triton-only cases, run by test_kernel_triton_interpreter.py under TRITON_INTERPRET=1 (the file
name keeps the normal run from collecting it)."""

import pytest
import torch
from kernel_helpers import gen, interpreting  # noqa: F401 (gen: a pytest fixture)

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


@pytest.mark.parametrize("rows_per_chunk", [13, 1000], ids=["10-chunks", "one-chunk"])
def test_gemm_backend_over_row_chunks(monkeypatch, gen, rows_per_chunk):
    """The "gemm" backend's GEMMs and epilogue run chunk by chunk (13 rows: chunks that end inside the
    epilogue's 16-row blocks, the teacher rows' offsets past the student's): the CoARS loss, its
    statistics and d hidden equal the float64 reference."""
    from kernel_helpers import IGNORE, as_float64, assert_close, random_problem

    from coars_fast.kernels import backend_torch, coars_loss, reference

    n, d, vocab = 130, 48, 1031
    monkeypatch.setenv("COARS_FAST_BACKEND", "gemm")
    monkeypatch.setitem(backend_torch.WORKSPACE_BYTES, "cpu", rows_per_chunk * vocab * 4)
    assert backend_torch.chunk_rows(vocab, torch.float32, "cpu") == rows_per_chunk
    p = random_problem(gen, n, d, vocab)
    ref = as_float64(p)
    kwargs = dict(distill_coef=0.3, credit_clip=0.5, temperature=1.3, return_entropy=True)
    hidden, ref_hidden = p["hidden"].requires_grad_(), ref["hidden"].requires_grad_()
    loss, stats = coars_loss(
        hidden, p["teacher_hidden"], p["weight"], p["targets"], p["rewards"], p["token_weights"], **kwargs
    )
    ref_loss, ref_stats = reference.coars_loss(
        ref_hidden, ref["teacher_hidden"], ref["weight"], p["targets"], ref["rewards"], ref["token_weights"], **kwargs
    )
    for key in ("logp_student", "logp_teacher", "credit", "entropy"):
        assert_close(stats[key], ref_stats[key], 1e-5, key)
    loss.backward()
    ref_loss.backward()
    assert_close(hidden.grad, ref_hidden.grad, 1e-5, "d student hidden")
    assert bool((hidden.grad[p["targets"] == IGNORE] == 0).all())
