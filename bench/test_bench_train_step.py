"""The CoARS training step: packed + fused (ours) against packed + materialised response logits and
padded + materialised logits of the response positions, on the same trajectories and model. Reports time and peak memory ratios; asserts ours is not slower and uses
less memory (at the real size; the smoke size only checks that both run and agree)."""

import pytest
import torch
from measure import interleaved_medians, peak_extra_bytes_each
from train_step_cases import CUDA_IMPLEMENTATIONS, IMPLEMENTATIONS, make_inputs

SCRIPT = __import__("train_step_cases").__file__
# Agreement with the padded step: fp32 to rounding; bf16 through 24 layers computed in another order.
TOLERANCE = {torch.float32: dict(loss=1e-4, grads=1e-3), torch.bfloat16: dict(loss=2e-2, grads=1e-1)}


def _agreement(a, b):
    """(relative loss difference, worst relative LoRA-gradient difference) of two steps' results."""
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert grads_a.keys() == grads_b.keys() and grads_a
    worst = max(
        ((grads_a[n].float() - grads_b[n].float()).norm() / grads_b[n].float().norm().clamp_min(1e-12)).item()
        for n in grads_a
    )
    return abs(loss_a - loss_b) / max(1.0, abs(loss_b)), worst


def _run(benchmark, size, impls, smoke):
    x = make_inputs(size)
    device, dtype = x["device"], x["size"].get("dtype", torch.float32)
    padded = impls["padded"](x)
    for name in impls:
        if name != "padded":
            loss_diff, grad_diff = _agreement(impls[name](x), padded)
            print(f"\n{name} vs padded: loss {loss_diff:.2e}, worst LoRA gradient {grad_diff:.2e} (relative)")
            assert loss_diff <= TOLERANCE[dtype]["loss"], f"{name}: loss differs by {loss_diff:.2e}"
            assert grad_diff <= TOLERANCE[dtype]["grads"], f"{name}: gradients differ by {grad_diff:.2e}"

    rounds = 1 if smoke else 2  # interleaved, as the tree-packing case: the suite stays under 10 minutes
    times = interleaved_medians(impls, x, rounds, warmup=0, device=device)  # warmed by the agreement check
    benchmark.pedantic(impls["ours"], args=(x,), rounds=1, iterations=1)  # the ratios come from `times`
    dtype_name = str(dtype).removeprefix("torch.")
    memory = peak_extra_bytes_each("train-step", list(impls), size, dtype_name, device, impls, x, script=SCRIPT)
    tokens = sum(len(s.prompt_ids) + len(s.teacher_prompt_ids) + 2 * len(s.response_ids) for s in x["samples"])
    rows = {
        name: dict(
            median_s=round(times[name], 3),
            time_vs_padded=round(times[name] / times["padded"], 3),
            peak_extra_mb=round(memory[name] / 2**20, 1),
            memory_vs_padded=round(memory[name] / memory["padded"], 4) if memory["padded"] else None,
            tokens_per_s=round(tokens / times[name]),
        )
        for name in impls
    }
    benchmark.extra_info.update(
        case="train-step", device=str(device), size=x["size"], turns=len(x["samples"]), results=rows
    )
    print(
        f"\ntrain step on {device}, {size} ({len(x['samples'])} turns, {tokens} tokens, {dtype_name}, "
        f"median of {rounds}):"
    )
    for name, row in rows.items():
        print(f"  {name:20s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return rows


def test_train_step_packed_fused_vs_padded(benchmark, smoke):
    rows = _run(benchmark, "smoke" if smoke else "cpu", IMPLEMENTATIONS["train-step"], smoke)
    if not smoke:
        assert rows["ours"]["time_vs_padded"] <= 1.0
        assert rows["ours"]["memory_vs_padded"] < 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA case (needs a GPU)")
def test_train_step_cuda(benchmark, smoke):
    """Qwen2.5-0.5B's shape in bf16 with the GPU preset's token budget; ours (varlen attention where
    torch has it), ours with the dense sdpa mask instead, and padded."""
    rows = _run(benchmark, "gpu", CUDA_IMPLEMENTATIONS["train-step"], smoke)
    assert rows["ours"]["time_vs_padded"] <= 1.0
    assert rows["ours"]["memory_vs_padded"] < 1.0
