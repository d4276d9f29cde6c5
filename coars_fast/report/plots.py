"""The report's figures: one grid of panels against optimizer step, one against training minutes, every
run in its own colour. Per-step training values are noisy (a few users per step): each is drawn faint
with its running mean on top; validation points are drawn as they are, with their 95% CI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from coars_fast.report.runs import Run

SMOOTH = 5  # steps in the running mean of per-step values

# (title, y label, [(kind, key, style label)]): style label None for a single series per run
PANELS = [
    ("Recommender reward", "mean reward per turn", [("train", "reward_rec", None)]),
    ("User reward", "mean reward per turn", [("train", "reward_user", None)]),
    ("Hit@1", "Hit@1", [("train", "train_hit_at_1", "train rollouts"), ("val", "hit_at_1", "validation (greedy)")]),
    (
        "ValidRatio",
        "share of valid recommendations",
        [("train", "valid_ratio", "train rollouts"), ("val", "valid_ratio", "validation")],
    ),
    ("User-agent F1 (validation)", "F1", [("val", "user_f1", None)]),
    # a User that accepts every first item ends every episode at turn 1 (docs/METHOD.md, exclusion rule)
    (
        "Turns per episode",
        "mean turns",
        [("train", "mean_turns", "train rollouts"), ("val", "mean_turns", "validation")],
    ),
    (
        "Turns left out (exclusion rule)",
        "share of turns",
        [("train", "excluded_share", None)],
    ),
    (
        "Mean |A| (self-distilled credit)",
        "mean |A| per token",
        [("train", "credit_abs_rec", "rec"), ("train", "credit_abs_user", "user")],
    ),
    (
        "Credit clip fraction",
        "share of tokens with |A| = c",
        [("train", "credit_clip_frac_rec", "rec"), ("train", "credit_clip_frac_user", "user")],
    ),
    (
        "Gradient norm (before clipping)",
        "L2 norm",
        [("train", "grad_norm_rec", "rec"), ("train", "grad_norm_user", "user")],
    ),
    ("Update throughput", "tokens / s", [("train", "tokens_per_s", None)]),
    ("Time per step", "seconds", [("train", "time_rollout", "rollout"), ("train", "time_update", "update")]),
]
STYLES = ["-", "--", ":"]
X_AXES = {"step": "optimizer step", "minutes": "training minutes"}


def running_mean(values: Sequence[float], window: int = SMOOTH) -> np.ndarray:
    """Mean of the last `window` values at each point (of fewer at the start)."""
    v = np.asarray(values, dtype=float)
    sums = np.cumsum(np.insert(v, 0, 0.0))
    end = np.arange(1, len(v) + 1)
    start = np.maximum(end - window, 0)
    return (sums[end] - sums[start]) / (end - start)


def plot_runs(runs: Sequence[Run], out: Path, x: str = "step") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    cols = 2
    rows = (len(PANELS) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.2 * rows), squeeze=False)
    for ax, (title, ylabel, series) in zip(axes.flat, PANELS):
        drawn = False
        for r, run in enumerate(runs):
            colour = colours[r % len(colours)]
            for s, (kind, key, style) in enumerate(series):
                xs, ys = _series(run, kind, key, x)
                if not xs:
                    continue
                drawn = True
                label = run.name + (f" ({style})" if style else "")
                if kind == "train":
                    ax.plot(xs, ys, STYLES[s], color=colour, alpha=0.25, linewidth=0.8)
                    ax.plot(xs, running_mean(ys), STYLES[s], color=colour, label=label, linewidth=1.6)
                else:
                    ax.plot(xs, ys, STYLES[s] + "o", color=colour, label=label, linewidth=1.6, markersize=4)
                    low, high = _series(run, kind, "hit_ci_low", x)[1], _series(run, kind, "hit_ci_high", x)[1]
                    if key == "hit_at_1" and len(low) == len(xs):
                        ax.fill_between(xs, low, high, color=colour, alpha=0.12, linewidth=0)
        ax.set_title(title)
        ax.set_xlabel(X_AXES[x])
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
    for ax in list(axes.flat)[len(PANELS) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"{', '.join(run.name for run in runs)}: training runs by {X_AXES[x]}"
        f" (faint: per step; solid: mean of the last {SMOOTH} steps)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # room for the suptitle
    path = out / f"report_by_{x}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(run: Run, kind: str, key: str, x: str) -> tuple[list[float], list[float]]:
    if key == "time_update":  # a step's time less its rollouts
        xs, total = run.series(kind, "time_step", x)
        _, rollout = run.series(kind, "time_rollout", x)
        return (xs, [t - r for t, r in zip(total, rollout)]) if len(total) == len(rollout) else ([], [])
    return run.series(kind, key, x)
