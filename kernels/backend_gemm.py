"""GEMM backend: cuBLAS GEMMs over bounded row chunks with a fused Triton epilogue (CUDA; CPU tensors
under TRITON_INTERPRET=1 for tests).

Per chunk the [rows, V] logits of the student and of the teacher are one GEMM each, written in
fp32; one Triton pass over them gives the softmax statistics, and for the student rows a second
writes p = exp(z - max) for the expected-weight GEMM sum_j p_j w_j. So the CoARS step makes three
weight passes (teacher, student, expected weight), all on cuBLAS, and its backward none: the
alternative to the "triton" backend's streaming backward (four passes, its own GEMM tiles).
Memory: the chunk's logits and p (WORKSPACE_BYTES of backend_torch) and the [N, D] expected weight.
"""

import torch

from .backend_torch import WORKSPACE_BYTES, _chunk_logits, chunk_rows, gemm_dtype, logit_grad, partials_dtype
from .backend_triton import _cdiv, _interpreting, unavailable_reason

__all__ = ["ACCUMULATES_EXPECTED_WEIGHT", "WORKSPACE_BYTES", "logit_grad", "unavailable_reason", "vocab_partials"]
ACCUMULATES_EXPECTED_WEIGHT = True
# Rows per program and vocabulary tile of the epilogue (row-wise, memory-bound: wide tiles on CUDA;
# small under the interpreter so that the tests cross tile and row-block edges).
CUDA_BLOCKS = dict(BLOCK_M=4, BLOCK_V=2048, num_warps=8)
INTERPRETED_BLOCKS = dict(BLOCK_M=16, BLOCK_V=64)


def _mm(a, b, out_dtype):
    """a @ b with an fp32 (or fp64) result: 16-bit inputs accumulate and return in out_dtype."""
    if a.dtype == out_dtype:
        return a @ b
    try:
        return torch.mm(a, b, out_dtype=out_dtype)
    except (TypeError, RuntimeError, NotImplementedError):
        return a.to(out_dtype) @ b.to(out_dtype)


def vocab_partials(hidden, teacher_hidden, weight, targets, inv_temperature, with_entropy, with_expected_weight):
    """Per-row softmax statistics over the whole vocabulary (one "range"), see kernels/merge.py."""
    from .triton_kernels import softmax_epilogue_kernel

    n, vocab = hidden.shape[0], weight.shape[0]
    pdtype = partials_dtype(hidden.dtype)
    w = weight.to(gemm_dtype(weight.dtype, weight.device))
    row_sets = [hidden] if teacher_hidden is None else [hidden, teacher_hidden]
    total_rows = len(row_sets) * n
    partials = torch.empty(1, 4, total_rows, dtype=pdtype, device=hidden.device)
    weight_partials = (
        torch.empty(1, n, hidden.shape[1], dtype=pdtype, device=hidden.device) if with_expected_weight else None
    )
    blocks = INTERPRETED_BLOCKS if _interpreting() else CUDA_BLOCKS
    step = chunk_rows(vocab, pdtype, hidden.device)
    for set_index, rows in enumerate(row_sets):
        for start in range(0, n, step):
            z = _chunk_logits(rows[start : start + step], w, inv_temperature, pdtype)
            write_p = with_expected_weight and set_index == 0
            p = torch.empty(z.shape, dtype=w.dtype, device=z.device) if write_p else z
            softmax_epilogue_kernel[(_cdiv(z.shape[0], blocks["BLOCK_M"]),)](
                z,
                targets[start : start + step],
                partials,
                p,
                z.shape[0],
                vocab,
                z.stride(0),
                p.stride(0),
                total_rows,
                set_index * n + start,
                WITH_ENTROPY=with_entropy,
                WRITE_P=write_p,
                **blocks,
            )
            if write_p:
                weight_partials[0, start : start + z.shape[0]] = _mm(p, w, pdtype)
    return partials, weight_partials
