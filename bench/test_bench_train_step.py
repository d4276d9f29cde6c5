"""The CoARS training step: packed + fused (ours) against padded + materialised logits, on the same
trajectories and model. Reports time and peak memory ratios; asserts ours is not slower and uses
less memory (at the real size; the smoke size only checks that both run and agree)."""
import torch

from measure import interleaved_medians, peak_extra_bytes
from train_step_cases import IMPLEMENTATIONS, make_inputs

SCRIPT = __import__("train_step_cases").__file__


def test_train_step_packed_fused_vs_padded(benchmark, smoke):
    size = "smoke" if smoke else "cpu"
    x = make_inputs(size)
    impls = IMPLEMENTATIONS["train-step"]
    ours_loss, ours_grads = impls["ours"](x)
    padded_loss, padded_grads = impls["padded"](x)
    assert abs(ours_loss - padded_loss) <= 1e-4 * max(1.0, abs(padded_loss))
    assert ours_grads.keys() == padded_grads.keys() and ours_grads
    worst = max(((ours_grads[n] - padded_grads[n]).norm() / padded_grads[n].norm().clamp_min(1e-12)).item()
                for n in ours_grads)
    assert worst < 1e-3, f"gradients differ: relative {worst:.2e}"

    rounds = 1 if smoke else 3
    times = interleaved_medians(impls, x, rounds, device=torch.device("cpu"))
    benchmark.pedantic(impls["ours"], args=(x,), rounds=1, iterations=1)  # the ratios come from `times`
    memory = {name: peak_extra_bytes("train-step", name, size, "float32", torch.device("cpu"), script=SCRIPT)
              for name in impls}
    tokens = sum(len(s.prompt_ids) + len(s.teacher_prompt_ids) + 2 * len(s.response_ids) for s in x["samples"])
    rows = {name: dict(median_s=round(times[name], 3), time_vs_padded=round(times[name] / times["padded"], 3),
                       peak_extra_mb=round(memory[name] / 2**20, 1),
                       memory_vs_padded=round(memory[name] / memory["padded"], 4) if memory["padded"] else None,
                       tokens_per_s=round(tokens / times[name]))
            for name in impls}
    benchmark.extra_info.update(case="train-step", size=x["size"], turns=len(x["samples"]), results=rows)
    print(f"\ntrain step on cpu, {size} ({len(x['samples'])} turns, {tokens} tokens, median of {rounds}):")
    for name, row in rows.items():
        print(f"  {name:8s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    if not smoke:
        assert rows["ours"]["time_vs_padded"] <= 1.0
        assert rows["ours"]["memory_vs_padded"] < 1.0
