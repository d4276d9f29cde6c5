"""coars-fast's kernels inside TRL: the log-prob and loss part of a GRPO step (bench/trl_cases.py)
with TRL's own fused head against TRL's head routed to coars-fast. Reports time and peak-memory
ratios measured in the same run; asserts the two sides agree and that routing to coars-fast is not
slower."""

from measure import interleaved_medians, peak_extra_bytes_each
from trl_cases import IMPLEMENTATIONS, make_inputs

SCRIPT = __import__("trl_cases").__file__


def test_trl_grpo_logprobs_with_and_without_coars_kernels(benchmark, smoke):
    size = "smoke" if smoke else "cpu"
    x = make_inputs(size)
    impls = IMPLEMENTATIONS["trl"]
    (loss_c, ent_c, grads_c), (loss_t, ent_t, grads_t) = impls["coars-fast"](x), impls["trl"](x)
    worst = max(((grads_c[n] - grads_t[n]).norm() / grads_t[n].norm().clamp_min(1e-20)).item() for n in grads_t)
    print(
        f"\ncoars-fast vs TRL: loss {loss_c:.6f} vs {loss_t:.6f}, entropy max diff "
        f"{(ent_c - ent_t).abs().max():.2e}, worst relative gradient difference {worst:.2e}"
    )
    assert abs(loss_c - loss_t) <= 1e-4 * max(1.0, abs(loss_t)) and worst <= 1e-3
    rounds = 1 if smoke else 3
    times = interleaved_medians(impls, x, rounds, warmup=0, device=x["device"])  # warmed by the check above
    benchmark.pedantic(impls["coars-fast"], args=(x,), rounds=1, iterations=1)  # ratios come from `times`
    memory = peak_extra_bytes_each("trl", list(impls), size, "float32", x["device"], script=SCRIPT)
    rows = {
        name: dict(
            median_s=round(times[name], 3),
            time_vs_trl=round(times[name] / times["trl"], 3),
            peak_extra_mb=round(memory[name] / 2**20, 1),
            memory_vs_trl=round(memory[name] / memory["trl"], 3) if memory["trl"] else None,
        )
        for name in impls
    }
    benchmark.extra_info.update(case="trl", size=x["size"], results=rows)
    print(f"GRPO log-probs + loss + backward ({size}, fp32, median of {rounds}):")
    for name, row in rows.items():
        print(f"  {name:10s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    if not smoke:
        assert rows["coars-fast"]["time_vs_trl"] <= 1.0, "routing TRL to coars-fast made it slower"
