"""Shared-prefix packing: the update of a default CPU step's turns with token trees against flat
packing, on the same turns and model. Reports tokens computed, time and peak memory ratios; asserts
the gradients agree and, at the real size, guards against regressions: tree <= 0.9x flat time (the
issue's target is 0.5x; here 0.69x, where the loss over the vocabulary weighs more than in the
full model, which measured 0.41x of flat at its best budget, docs/RESULTS.md)."""

from measure import interleaved_medians, peak_extra_bytes_each
from tree_packing_cases import IMPLEMENTATIONS, make_inputs

from coars_fast.rollout import pack, pack_trees, padding_report

SCRIPT = __import__("tree_packing_cases").__file__


def test_tree_vs_flat_packing_update(benchmark, smoke):
    size = "smoke" if smoke else "cpu"
    x = make_inputs(size)
    impls = IMPLEMENTATIONS["packing"]
    (loss_tree, grads_tree), (loss_flat, grads_flat) = impls["tree"](x), impls["flat"](x)
    worst = max(
        ((grads_tree[n] - grads_flat[n]).norm() / grads_flat[n].norm().clamp_min(1e-20)).item() for n in grads_flat
    )
    print(
        f"\ntree vs flat: loss {loss_tree:.6f} vs {loss_flat:.6f}, worst relative LoRA-gradient difference {worst:.2e}"
    )
    assert abs(loss_tree - loss_flat) <= 1e-4 * max(1.0, abs(loss_flat)) and worst <= 1e-4

    budget = x["size"]["budget"]
    tree = padding_report(pack_trees(x["samples"], budget["tree"]), budget["tree"])
    flat = padding_report(pack(x["samples"], budget["flat"]), budget["flat"])
    rounds = 1 if smoke else 2
    times = interleaved_medians(impls, x, rounds, warmup=0, device=x["device"])  # warmed by the agreement check
    benchmark.pedantic(impls["tree"], args=(x,), rounds=1, iterations=1)  # the ratios come from `times`
    memory = peak_extra_bytes_each("packing", list(impls), size, "float32", x["device"], script=SCRIPT)
    rows = {
        "tree": dict(
            median_s=round(times["tree"], 3),
            time_vs_flat=round(times["tree"] / times["flat"], 3),
            tokens=tree["tokens"],
            token_ratio=round(tree["token_ratio"], 3),
            peak_extra_mb=round(memory["tree"] / 2**20, 1),
            memory_vs_flat=round(memory["tree"] / memory["flat"], 3) if memory["flat"] else None,
        ),
        "flat": dict(
            median_s=round(times["flat"], 3),
            time_vs_flat=1.0,
            tokens=flat["tokens"],
            token_ratio=1.0,
            peak_extra_mb=round(memory["flat"] / 2**20, 1),
            memory_vs_flat=1.0,
        ),
    }
    benchmark.extra_info.update(case="packing", size=x["size"], turns=len(x["samples"]), results=rows)
    print(f"update of {len(x['samples'])} turns ({size}, fp32, token budgets {budget}, median of {rounds}):")
    for name, row in rows.items():
        print(f"  {name:5s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    assert tree["tokens"] < flat["tokens"]
    if not smoke:
        assert rows["tree"]["time_vs_flat"] <= 0.9, "the tree update lost its lead over flat packing"
