"""The report's markdown: settings of each run, the before/after table with 95% CIs and the classic
baselines on the same candidate lists, and the validation curve's points."""

from __future__ import annotations

from collections.abc import Sequence

from coars_fast.report.runs import Run


def _get(tree: dict, dotted: str, default="-"):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree


def _ci(pair) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]" if isinstance(pair, (list, tuple)) and len(pair) == 2 else "-"


def _f1(summary: dict) -> str:
    f1 = summary.get("user_f1")
    return f"{f1['f1']:.3f} ({f1['users']} users)" if f1 else "-"


def settings_table(runs: Sequence[Run]) -> list[str]:
    lines = [
        "| run | dataset | seed | steps | training min | lambda (distill) | reward | trained agents |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        train = run.records.get("train", [])
        last = train[-1] if train else {}
        agents = _get(run.config, "rollout.train_agents")
        lines.append(
            f"| {run.name} | {_get(run.config, 'data.dataset')} | {_get(run.config, 'train.seed')} | {last.get('step', 0)} | "
            f"{last.get('train_minutes', 0.0):.1f} | {_get(run.config, 'loss.distill_coef')} | "
            f"{_get(run.config, 'reward.kind')} | {','.join(agents) if isinstance(agents, list) else agents} |"
        )
    return lines


EVAL_NAMES = {
    "initial": "zero-shot (before training)",
    "final": "trained (after)",
    "initial-test": "zero-shot, test users",
    "final-test": "trained, test users",
}


def results_table(runs: Sequence[Run]) -> list[str]:
    lines = [
        "| run | evaluation | episodes | Hit@1 | 95% CI | ValidRatio | turns | user F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    baselines = {}
    for run in runs:
        for label in sorted(run.evals, key=lambda k: (k.endswith("-test"), k.removesuffix("-test") != "initial", k)):
            s = run.evals[label]
            a = s.get("agents", {})
            name = EVAL_NAMES.get(label, label)
            lines.append(
                f"| {run.name} | {name} | {a.get('episodes', '-')} | {a.get('hit_at_1', float('nan')):.3f} | "
                f"{_ci(a.get('ci95'))} | {a.get('valid_ratio', float('nan')):.3f} | "
                f"{a.get('mean_turns', float('nan')):.2f} | {_f1(s)} |"
            )
            for method, b in s.get("baselines", {}).items():
                baselines.setdefault((run.name, a.get("episodes")), {})[method] = b
    if baselines:
        lines += [
            "",
            "Classic baselines on the same candidate lists:",
            "",
            "| run | episodes | method | Hit@1 | 95% CI |",
            "|---|---|---|---|---|",
        ]
        for (name, episodes), methods in baselines.items():
            for method, b in methods.items():
                ci = "exact" if method == "random" else _ci(b.get("ci95"))
                lines.append(f"| {name} | {episodes} | {method} | {b['hit_at_1']:.3f} | {ci} |")
    return lines


def curve_table(runs: Sequence[Run]) -> list[str]:
    rows = [(run, r) for run in runs for r in run.records.get("val", [])]
    if not rows:
        return ["No periodic validation logged (eval.every = 0)."]
    lines = ["| run | step | training min | Hit@1 | 95% CI | ValidRatio | user F1 |", "|---|---|---|---|---|---|---|"]
    for run, r in rows:
        minutes = next((t.get("train_minutes") for t in run.records.get("train", []) if t["step"] == r["step"]), 0.0)
        f1 = r.get("user_f1")
        lines.append(
            f"| {run.name} | {r['step']} | {minutes or 0.0:.1f} | {r.get('hit_at_1', float('nan')):.3f} | "
            f"{_ci((r.get('hit_ci_low'), r.get('hit_ci_high'))) if r.get('hit_ci_low') is not None else '-'} | "
            f"{r.get('valid_ratio', float('nan')):.3f} | {f'{f1:.3f}' if isinstance(f1, float) else '-'} |"
        )
    return lines


def markdown(runs: Sequence[Run], figures: Sequence[str]) -> str:
    parts = [
        f"# Report: {', '.join(run.name for run in runs)}",
        "",
        "## Runs",
        "",
        *settings_table(runs),
        "",
        "## Before and after training",
        "",
        *results_table(runs),
        "",
        "## Validation curve (fixed validation subset, greedy)",
        "",
        *curve_table(runs),
        "",
        "## Figures",
        "",
    ]
    parts += [f"![{name}]({name})" for name in figures]
    return "\n".join(parts) + "\n"
