"""Speed and memory of our kernels against the baselines, measured in the same run.

Each case times the median of every implementation and measures its peak extra memory, checks
ours against the naive result, and asserts ratios (never absolute times). Figures and the machine
they came from are kept in bench/RESULTS.md. Weight passes (one pass = one N x D x V GEMM,
2 N D V FLOP) are counted to turn times into effective TFLOP/s on GPUs.
"""

import pytest
import torch
from cases import IMPLEMENTATIONS, SHAPES, make_inputs
from measure import interleaved_medians, peak_extra_bytes_each

# Weight passes each implementation executes per step with a frozen head, per device type where they
# differ: our C++/torch backends hold d logp / d hidden (the expected weight) from the forward, Triton streams (recomputed
# logits + dH); CCE materialises the logits under torch.compile on CPU and streams on CUDA.
PASSES = {
    "coars": {
        "ours": {"cpu": 3, "cuda": 4},
        "ours-streaming": 4,
        "naive": 3,
        "liger": 4,
        "torch-fallback": 3,
        "gemm": 3,
        "gemm-floor": 3,
    },
    "logprobs": {
        "ours": {"cpu": 2, "cuda": 3},
        "naive": 2,
        "cce": {"cpu": 2, "cuda": 3},
        "torch-fallback": 2,
        "gemm": 2,
        "gemm-floor": 2,
    },
}


def _passes(case, name, device):
    passes = PASSES[case][name]
    return passes[device.type] if isinstance(passes, dict) else passes


def _gemm_floor(passes):
    """The bare [N, D] x [D, V] GEMMs of the naive step into one preallocated output (on CPU not a
    true floor: tiles that stay in cache beat writing the 400 MB output)."""

    def run(x):
        hidden, weight = x["hidden"], x["weight"]
        logits = torch.empty(hidden.shape[0], weight.shape[0], dtype=hidden.dtype, device=hidden.device)
        for _ in range(passes):
            torch.mm(hidden, weight.t(), out=logits)

    return run


def _check_ours_matches_naive(impls, x):
    ours_value, ours_grad = impls["ours"](x)
    naive_value, naive_grad = impls["naive"](x)
    for name, got, want in [("value", ours_value, naive_value), ("d hidden", ours_grad, naive_grad)]:
        rel = ((got.float() - want.float()).norm() / want.float().norm()).item()
        assert rel < (2e-2 if x["hidden"].dtype == torch.bfloat16 else 1e-4), f"ours vs naive {name}: rel {rel:.2e}"


def _run_case(benchmark, case, device, shape, dtype, smoke, names):
    device = torch.device(device)
    x = make_inputs(shape, dtype, device)
    impls = {name: IMPLEMENTATIONS[case][name] for name in names}
    _check_ours_matches_naive(impls, x)

    impls["gemm-floor"] = _gemm_floor(_passes(case, "gemm-floor", device))
    rounds = 1 if smoke else 3
    times = interleaved_medians(impls, x, rounds)
    # pytest-benchmark keeps its own record of ours alone (for --benchmark-compare across commits).
    benchmark.pedantic(impls["ours"], args=(x,), rounds=rounds, iterations=1)
    dtype_name = str(dtype).removeprefix("torch.")
    names = [name for name in impls if name != "gemm-floor"]
    memory = peak_extra_bytes_each(case, names, shape, dtype_name, device, fns=impls, inputs=x)

    s = SHAPES[shape]
    flop_per_pass = 2 * s["n"] * s["d"] * s["v"]
    rows = {}
    for name in sorted(times, key=times.get):
        rows[name] = dict(
            median_s=round(times[name], 4),
            time_vs_naive=round(times[name] / times["naive"], 3),
            peak_extra_mb=round(memory[name] / 2**20, 1) if name in memory else None,
            memory_vs_naive=round(memory[name] / memory["naive"], 4) if name in memory and memory["naive"] else None,
            passes=_passes(case, name, device),
            tflops_executed=round(_passes(case, name, device) * flop_per_pass / times[name] / 1e12, 2),
        )
    benchmark.extra_info.update(case=case, device=str(device), shape=s, dtype=dtype_name, results=rows)
    print(f"\n{case} on {device} {s} {dtype_name} (median of {rounds}):")
    for name, row in rows.items():
        print(f"  {name:15s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return rows


def test_coars_step_cpu(benchmark, smoke):
    """The acceptance case: teacher fwd + student fwd/bwd, frozen head, N=2048 D=576 V=49152 fp32."""
    rows = _run_case(
        benchmark,
        "coars",
        "cpu",
        "smoke" if smoke else "cpu",
        torch.float32,
        smoke,
        ["ours", "naive", "liger", "torch-fallback", "ours-streaming"],
    )
    if not smoke:
        assert rows["ours"]["time_vs_naive"] <= 1.0
        assert rows["ours"]["memory_vs_naive"] <= 0.10
        assert rows["ours"]["median_s"] < rows["liger"]["median_s"]


def test_logprobs_step_cpu(benchmark, smoke):
    """One model's per-token log-probs, fwd + bwd with an upstream gradient, against CCE."""
    rows = _run_case(
        benchmark,
        "logprobs",
        "cpu",
        "smoke" if smoke else "cpu",
        torch.float32,
        smoke,
        ["ours", "naive", "cce", "torch-fallback"],
    )
    if not smoke:
        assert rows["ours"]["time_vs_naive"] <= 1.0
        assert rows["ours"]["memory_vs_naive"] <= 0.10


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA cases (need a GPU)")


def _run_cuda_case(benchmark, smoke, case, shape, rivals):
    """A bf16 case on CUDA: ours (Triton), naive, the given rivals, and both 3-pass cuBLAS paths."""
    names = ["ours", "naive", *rivals, "torch-fallback", "gemm"]
    return _run_case(benchmark, case, "cuda", "smoke" if smoke else shape, torch.bfloat16, smoke, names)


# The CoARS step's time limits on CUDA against naive (the performance issue's targets): at D = 4096
# three weight passes at the best published Hopper rate, at D = 896 where naive is memory-bound.
CUDA_COARS_TIME_VS_NAIVE = {"gpu-4096": 0.85, "gpu-896": 0.5}


@needs_cuda
@pytest.mark.parametrize("shape", ["gpu-4096", "gpu-896"])
def test_coars_step_cuda(benchmark, smoke, shape):
    """Triton (streaming backward, 4 weight passes) beside the two 3-pass cuBLAS paths (the expected
    weight held from the forward): the gemm backend (fused Triton epilogue) and the torch backend
    (unfused torch epilogues); naive and Liger."""
    rows = _run_cuda_case(benchmark, smoke, "coars", shape, ["liger"])
    if not smoke:
        assert rows["ours"]["memory_vs_naive"] <= 0.10
        assert rows["ours"]["time_vs_naive"] <= CUDA_COARS_TIME_VS_NAIVE[shape]


@needs_cuda
@pytest.mark.parametrize("shape", ["gpu-4096", "gpu-896"])
def test_logprobs_step_cuda(benchmark, smoke, shape):
    rows = _run_cuda_case(benchmark, smoke, "logprobs", shape, ["cce"])
    if not smoke:
        assert rows["ours"]["memory_vs_naive"] <= 0.10
