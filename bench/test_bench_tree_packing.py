"""Shared-prefix packing: the update of the default preset's first step (its LastFM turns, played by
the embedded model) with token trees against flat packing, on the same turns and model. Reports
tokens computed, time and peak memory ratios; asserts the gradients agree. At the real size the
2-layer model gives exactness, time and memory, then the embedded model's full depth (30 layers) is
timed on the same turns: a warm-up round of the tree update (its first round at this depth took
21.9 s, against 14.8 s in later rounds of scripts/packing_update_time.py), then one round each, tree
then flat, that also checks exactness (flat runs second, after the tree has touched the memory it
reuses). Guards: tree <= 0.9x flat time at 2 layers (where the loss over the vocabulary weighs more)
and <= 0.5x at full depth, the issue's target (bench/RESULTS.md)."""

import time

from measure import interleaved_medians, peak_extra_bytes_each
from tree_packing_cases import IMPLEMENTATIONS, SIZES, make_inputs

from coars_fast.rollout import pack, pack_trees, padding_report

SCRIPT = __import__("tree_packing_cases").__file__


def assert_tree_equals_flat(x, impls) -> dict:
    """One update each, tree first: the same loss and LoRA gradients. Returns each side's seconds."""
    seconds, out = {}, {}
    for name in ("tree", "flat"):
        started = time.perf_counter()
        out[name] = impls[name](x)
        seconds[name] = time.perf_counter() - started
    (loss_tree, grads_tree), (loss_flat, grads_flat) = out["tree"], out["flat"]
    worst = max(
        ((grads_tree[n] - grads_flat[n]).norm() / grads_flat[n].norm().clamp_min(1e-20)).item() for n in grads_flat
    )
    print(
        f"\ntree vs flat ({x['size']['layers']} layers): loss {loss_tree:.6f} vs {loss_flat:.6f}, worst relative "
        f"LoRA-gradient difference {worst:.2e}"
    )
    assert abs(loss_tree - loss_flat) <= 1e-4 * max(1.0, abs(loss_flat)) and worst <= 1e-4
    return seconds


def test_tree_vs_flat_packing_update(benchmark, smoke):
    size = "smoke" if smoke else "cpu"
    x = make_inputs(size)
    impls = IMPLEMENTATIONS["packing"]
    assert_tree_equals_flat(x, impls)

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
    print(f"update of {len(x['samples'])} turns ({size}, fp32, token budgets {budget}, median of {rounds}):")
    for name, row in rows.items():
        print(f"  {name:5s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    assert tree["tokens"] < flat["tokens"]
    turns, full = len(x["samples"]), {}
    if not smoke:
        assert rows["tree"]["time_vs_flat"] <= 0.9, "the tree update lost its lead over flat packing"
        del x
        deep = make_inputs("full")
        impls["tree"](deep)  # warm-up
        times = assert_tree_equals_flat(deep, impls)  # the timed round (CPU: no device to synchronise)
        full = dict(
            layers=SIZES["full"]["layers"],
            tree_s=round(times["tree"], 3),
            flat_s=round(times["flat"], 3),
            time_vs_flat=round(times["tree"] / times["flat"], 3),
        )
        print("full depth, one timed round after a tree warm-up: " + "  ".join(f"{k}={v}" for k, v in full.items()))
    benchmark.extra_info.update(case="packing", size=SIZES[size], turns=turns, results=rows, full_depth=full)
    if full:
        assert full["time_vs_flat"] <= 0.5, "at full depth the tree update is no longer at most half of flat's time"
