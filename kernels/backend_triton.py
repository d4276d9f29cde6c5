"""Triton backend: launches kernels/triton_kernels.py on CUDA tensors, or on CPU tensors under
TRITON_INTERPRET=1 (tests; the variable must be set before triton is imported)."""

import importlib.util
import os

import torch

ACCUMULATES_EXPECTED_WEIGHT = False  # the [rows, D] accumulator does not fit on-chip for large D


def _cdiv(a, b):
    return -(-a // b)


def _interpreting():
    return os.environ.get("TRITON_INTERPRET") == "1"


def unavailable_reason(device):
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and _interpreting():
        return None
    return f"it runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), not {device.type}"


# Tile sizes and launch settings per kernel on CUDA, picked by bench/tune_triton_blocks.py on an H200
# (figures in bench/RESULTS.md). "partials_teacher" holds two accumulators, hence its own entry.
CUDA_CONFIGS = {
    "partials": dict(BLOCK_M=128, BLOCK_V=256, BLOCK_D=64, num_warps=8, num_stages=3),
    "partials_teacher": dict(BLOCK_M=64, BLOCK_V=256, BLOCK_D=64, num_warps=8, num_stages=3),
    "logit_grad": dict(BLOCK_M=256, BLOCK_V=128, BLOCK_D=64, num_warps=8, num_stages=3),
}
_LAUNCH_KEYS = ("num_warps", "num_stages")


def _launch_config(kernel, device):
    """(block sizes, launch settings, how many programs to aim for when splitting the vocabulary)."""
    if _interpreting():  # programs run one by one: few, large blocks; still split to test merging
        return dict(BLOCK_M=32, BLOCK_V=64, BLOCK_D=32), dict(), 4
    config = CUDA_CONFIGS[kernel]
    blocks = {k: v for k, v in config.items() if k not in _LAUNCH_KEYS}
    launch = {k: v for k, v in config.items() if k in _LAUNCH_KEYS}
    return blocks, launch, 4 * torch.cuda.get_device_properties(device).multi_processor_count


def _dot_precision(dtype):
    """fp32 inputs: exact IEEE dots unless the user allowed TF32 for matmuls, as torch does (the
    setting only matters for fp32; half-precision dots keep Triton's default)."""
    return "ieee" if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32 else "tf32"


def vocab_partials(hidden, teacher_hidden, weight, targets, inv_temperature, with_entropy, with_expected_weight):
    from .triton_kernels import vocab_partials_kernel

    n, d = hidden.shape
    vocab = weight.shape[0]
    total_rows = n if teacher_hidden is None else 2 * n
    if n == 0:
        return torch.empty(1, 4, 0, dtype=torch.float32, device=hidden.device), None
    kernel = "partials" if teacher_hidden is None else "partials_teacher"
    blocks, launch, target_programs = _launch_config(kernel, hidden.device)
    row_blocks = _cdiv(n, blocks["BLOCK_M"])
    vocab_tiles = _cdiv(vocab, blocks["BLOCK_V"])
    wanted_splits = min(vocab_tiles, _cdiv(target_programs, row_blocks))  # enough programs for few rows
    tiles_per_split = _cdiv(vocab_tiles, wanted_splits)
    splits = _cdiv(vocab_tiles, tiles_per_split)  # every split starts on a real tile
    partials = torch.empty(splits, 4, total_rows, dtype=torch.float32, device=hidden.device)
    vocab_partials_kernel[(row_blocks, splits)](
        hidden,
        hidden if teacher_hidden is None else teacher_hidden,
        weight,
        targets,
        partials,
        n,
        vocab,
        d,
        hidden.stride(0),
        weight.stride(0),
        total_rows,
        vocab_tiles,
        tiles_per_split,
        inv_temperature,
        HAS_TEACHER=teacher_hidden is not None,
        WITH_ENTROPY=with_entropy,
        UPCAST=_interpreting(),
        DOT_PRECISION=_dot_precision(hidden.dtype),
        **blocks,
        **launch,
    )
    return partials, None


def logit_grad(hidden, weight, targets, lse, logp_coef, entropy_coef, mean_logit, inv_temperature):
    from .triton_kernels import logit_grad_kernel

    n, d = hidden.shape
    vocab = weight.shape[0]
    out = torch.empty(n, vocab, dtype=weight.dtype, device=hidden.device)
    if n == 0:
        return out
    blocks, launch, _ = _launch_config("logit_grad", hidden.device)
    vocab_tiles = _cdiv(vocab, blocks["BLOCK_V"])
    with_entropy = entropy_coef is not None
    logit_grad_kernel[(_cdiv(n, blocks["BLOCK_M"]) * vocab_tiles,)](
        hidden,
        weight,
        targets,
        lse,
        logp_coef,
        entropy_coef if with_entropy else lse,
        mean_logit if with_entropy else lse,
        out,
        n,
        vocab,
        d,
        hidden.stride(0),
        weight.stride(0),
        vocab_tiles,
        inv_temperature,
        WITH_ENTROPY=with_entropy,
        UPCAST=_interpreting(),
        DOT_PRECISION=_dot_precision(hidden.dtype),
        **blocks,
        **launch,
    )
    return out
