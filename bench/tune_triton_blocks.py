"""Sweeps the tile sizes of the Triton kernels on CUDA at the benchmark shapes (bench/cases.py).

Times each kernel alone under every candidate configuration (the forward sweep with and without
teacher rows, and one backward chunk of d loss / d logits at the largest workspace), picks per kernel
the candidate with the lowest total time relative to the best at each shape, then times our whole
CoARS and log-prob steps with the current configuration and with the picked one at each workspace
(backend_torch.WORKSPACE_BYTES), naive alongside. Copy the picks into kernels/backend_triton.py's
CUDA_CONFIGS and backend_torch.WORKSPACE_BYTES, and the figures into bench/RESULTS.md.

    python bench/tune_triton_blocks.py [--shapes gpu-4096 gpu-896] [--json OUT]
"""

import argparse
import json
import os
import sys

import torch
from cases import IMPLEMENTATIONS, make_inputs
from measure import interleaved_medians

from coars_fast.kernels import backend_torch, backend_triton

# (BLOCK_M, BLOCK_V, BLOCK_D, num_warps, num_stages)
CANDIDATES = [
    (64, 128, 64, 8, 3),
    (128, 128, 64, 8, 3),
    (128, 128, 64, 4, 4),
    (128, 256, 64, 8, 3),
    (64, 256, 64, 8, 3),
    (128, 128, 128, 8, 2),
    (256, 128, 64, 8, 3),
    (128, 64, 64, 4, 4),
]


WORKSPACES = [64 << 20, 256 << 20, 1 << 30]  # streaming-backward chunk budgets on CUDA


def _config(candidate):
    return dict(zip(("BLOCK_M", "BLOCK_V", "BLOCK_D", "num_warps", "num_stages"), candidate))


def _kernel_calls(x):
    """kernel name -> a call of that kernel alone on the benchmark inputs."""
    hidden, teacher, weight, targets = x["hidden"], x["teacher_hidden"], x["weight"], x["targets"]
    rows = backend_torch.chunk_rows(weight.shape[0], weight.dtype, weight.device)
    lse = torch.full((rows,), 12.0, device=hidden.device)
    coef = torch.randn(rows, device=hidden.device)
    return {
        "partials": lambda: backend_triton.vocab_partials(hidden, None, weight, targets, 1.0, False, False),
        "partials_teacher": lambda: backend_triton.vocab_partials(hidden, teacher, weight, targets, 1.0, False, False),
        "logit_grad": lambda: backend_triton.logit_grad(
            hidden[:rows], weight, targets[:rows], lse, coef, None, None, 1.0
        ),
    }


def _time(fn, reps=5):
    import triton.testing

    return triton.testing.do_bench(fn, warmup=2, rep=reps * 50, return_mode="median") / 1e3


def _steps(x, rounds=5):
    impls = {
        f"{case}/{name}": IMPLEMENTATIONS[case][name] for case in ("coars", "logprobs") for name in ("ours", "naive")
    }
    return interleaved_medians(impls, x, rounds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["gpu-4096", "gpu-896"])
    parser.add_argument("--json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("tune_triton_blocks: needs a CUDA device")
    os.environ["COARS_FAST_AUTOTUNE"] = "0"  # the sweep sets CUDA_CONFIGS itself
    current = {k: dict(v) for k, v in backend_triton.CUDA_CONFIGS.items()}
    current_workspace = backend_torch.WORKSPACE_BYTES["cuda"]
    backend_torch.WORKSPACE_BYTES["cuda"] = max(WORKSPACES)  # backward tiles are swept on the tallest chunk
    report = {"current": current, "kernels": {}, "steps": {}}
    inputs = {shape: make_inputs(shape, torch.bfloat16, "cuda") for shape in args.shapes}

    for kernel in current:
        times = {}
        for candidate in CANDIDATES:
            backend_triton.CUDA_CONFIGS[kernel] = _config(candidate)
            for shape, x in inputs.items():
                try:
                    times[candidate, shape] = _time(_kernel_calls(x)[kernel])
                except Exception as err:  # too much shared memory or registers for this tile: skip it
                    print(f"{kernel} {candidate} {shape}: {type(err).__name__}: {str(err)[:120]}")
                    times[candidate, shape] = float("inf")
        best = {shape: min(times[c, shape] for c in CANDIDATES) for shape in inputs}
        score = {c: sum(times[c, s] / best[s] for s in inputs) for c in CANDIDATES}
        picked = min(CANDIDATES, key=score.get)
        backend_triton.CUDA_CONFIGS[kernel] = _config(picked)
        print(f"\n{kernel}: time per shape (ms), score = sum of time / best")
        for c in sorted(CANDIDATES, key=score.get):
            print(f"  {c}  " + "  ".join(f"{s}={times[c, s] * 1e3:.2f}" for s in inputs) + f"  score={score[c]:.3f}")
        report["kernels"][kernel] = {
            "picked": _config(picked),
            "times_ms": {f"{c}|{s}": round(times[c, s] * 1e3, 3) for c in CANDIDATES for s in inputs},
        }

    picked = {k: dict(v) for k, v in backend_triton.CUDA_CONFIGS.items()}
    runs = [("current", current, current_workspace)] + [("picked", picked, w) for w in WORKSPACES]
    for label, configs, workspace in runs:
        backend_triton.CUDA_CONFIGS.update(configs)
        backend_torch.WORKSPACE_BYTES["cuda"] = workspace
        label = f"{label} tiles, workspace {workspace >> 20} MiB"
        for shape, x in inputs.items():
            times = _steps(x)
            report["steps"][f"{label}|{shape}"] = times
            print(
                f"\n{label}, {shape}: "
                + "  ".join(f"{name}={t * 1e3:.1f}ms" for name, t in times.items())
                + "  "
                + "  ".join(
                    f"{case} ours/naive={times[f'{case}/ours'] / times[f'{case}/naive']:.3f}"
                    for case in ("coars", "logprobs")
                )
            )
    print("\npicked CUDA_CONFIGS = " + json.dumps(picked))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
