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
# Other GPUs and shapes: on first use per (kernel, D, V, dtype, GPU) these and the H200 pick are timed
# on the call's own inputs and the fastest is kept for the process (COARS_FAST_AUTOTUNE=0: the H200
# pick, untimed). The sweep's runners-up at D = 4096 and 896.
CUDA_CANDIDATES = [
    dict(BLOCK_M=128, BLOCK_V=256, BLOCK_D=64, num_warps=8, num_stages=3),
    dict(BLOCK_M=64, BLOCK_V=256, BLOCK_D=64, num_warps=8, num_stages=3),
    dict(BLOCK_M=256, BLOCK_V=128, BLOCK_D=64, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_V=128, BLOCK_D=64, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_V=128, BLOCK_D=64, num_warps=4, num_stages=4),
    dict(BLOCK_M=64, BLOCK_V=128, BLOCK_D=64, num_warps=8, num_stages=3),
]
INTERPRETED_CONFIG = dict(BLOCK_M=32, BLOCK_V=64, BLOCK_D=32)  # programs run one by one: few, large
_LAUNCH_KEYS = ("num_warps", "num_stages")
_picked: dict = {}  # (kernel, D, V, dtype, GPU name) -> config


def _split(config):
    """(block sizes, launch settings) of a config."""
    launch = {k: config[k] for k in _LAUNCH_KEYS if k in config}
    return {k: v for k, v in config.items() if k not in launch}, launch


def _target_programs(device):
    """How many programs to aim for when splitting the vocabulary (4 per SM; 4 when interpreted,
    still split to test the merging)."""
    return 4 if _interpreting() else 4 * torch.cuda.get_device_properties(device).multi_processor_count


def _cuda_seconds(fn, runs: int = 3) -> float:
    """Median seconds of fn() on the current CUDA stream, after one warm-up call (which compiles)."""
    fn()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def _tuned(kernel, key, run, timer=_cuda_seconds):
    """run(config) with the tile config for (kernel, key): the interpreter's, the H200 pick when
    autotuning is off, else the fastest of the H200 pick and CUDA_CANDIDATES, timed on this call's
    inputs the first time (a candidate that cannot launch here, e.g. for lack of shared memory, is
    skipped)."""
    if _interpreting():
        return run(INTERPRETED_CONFIG)
    if os.environ.get("COARS_FAST_AUTOTUNE", "1") == "0":
        return run(CUDA_CONFIGS[kernel])
    if (kernel, *key) not in _picked:
        candidates = [CUDA_CONFIGS[kernel], *(c for c in CUDA_CANDIDATES if c != CUDA_CONFIGS[kernel])]
        times, failure = [], None
        for index, config in enumerate(candidates):
            try:
                times.append((timer(lambda config=config: run(config)), index))
            except Exception as err:  # triton's OutOfResources, launch errors: this tile does not fit
                failure = err
        if not times:
            raise RuntimeError(f"no Triton tile configuration of {kernel} launches on this GPU") from failure
        _picked[(kernel, *key)] = candidates[min(times)[1]]
    return run(_picked[(kernel, *key)])


def _key(hidden, weight):
    return hidden.shape[1], weight.shape[0], hidden.dtype, torch.cuda.get_device_name(hidden.device)


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

    def run(config):
        blocks, launch = _split(config)
        row_blocks = _cdiv(n, blocks["BLOCK_M"])
        vocab_tiles = _cdiv(vocab, blocks["BLOCK_V"])
        wanted_splits = min(vocab_tiles, _cdiv(_target_programs(hidden.device), row_blocks))  # few rows: split V
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
        return partials

    kernel = "partials" if teacher_hidden is None else "partials_teacher"
    key = None if _interpreting() else _key(hidden, weight)
    return _tuned(kernel, key, run), None


def logit_grad(hidden, weight, targets, lse, logp_coef, entropy_coef, mean_logit, inv_temperature):
    from .triton_kernels import logit_grad_kernel

    n, d = hidden.shape
    vocab = weight.shape[0]
    if n == 0:
        return torch.empty(n, vocab, dtype=weight.dtype, device=hidden.device)
    with_entropy = entropy_coef is not None

    def run(config):
        blocks, launch = _split(config)
        out = torch.empty(n, vocab, dtype=weight.dtype, device=hidden.device)
        vocab_tiles = _cdiv(vocab, blocks["BLOCK_V"])
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

    return _tuned("logit_grad", None if _interpreting() else _key(hidden, weight), run)
