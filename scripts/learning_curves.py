"""Markdown tables of training runs for docs/RESULTS.md: the per-step learning curves (rewards per
agent, Hit@1 and ValidRatio of the sampled training episodes) and every evaluation of each run.

    python scripts/learning_curves.py runs/lastfm-A runs/lastfm-B ...
"""

import json
import sys
from pathlib import Path

CURVE = (
    "train_minutes",
    "reward_rec",
    "reward_user",
    "turns_user",
    "train_hit_at_1",
    "valid_ratio",
    "grad_norm_rec",
    "grad_norm_user",
)
EVAL = ("hit_at_1", "valid_ratio", "mean_turns", "user_precision", "user_recall", "user_f1")


def read(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        sys.exit(f"{run}: no metrics.jsonl (not a run folder?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(header: tuple, rows: list[tuple]) -> str:
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def main(runs: list[str]) -> None:
    if not runs:
        sys.exit(__doc__)
    for run in map(Path, runs):
        records = read(run)
        print(f"### {run.name}\n")
        train = [r for r in records if r["kind"] == "train"]
        print(table(("step",) + CURVE, [(r["step"],) + tuple(r.get(k) for k in CURVE) for r in train]), "\n")
        evals = [r for r in records if r["kind"] == "eval"]
        if evals:
            print(table(("eval at step",) + EVAL, [(r["step"],) + tuple(r.get(k) for k in EVAL) for r in evals]), "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
