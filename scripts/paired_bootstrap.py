"""Paired bootstrap over users of two evaluations of the same episodes (`coars-fast eval --out A` and
`--out B`, same dataset, split, users, seed): Hit@1 and ValidRatio of each, and B - A, with 95%
percentile intervals. Users are resampled, so the turns of one episode stay together.

    python scripts/paired_bootstrap.py runs/lastfm-eval-zeroshot-free runs/lastfm-eval-trained-free
"""

import argparse
import json
import random
import sys
from pathlib import Path


def episodes(folder: Path) -> dict[str, tuple[int, int, int]]:
    """episode id -> (valid recommendations, turns, hit)."""
    out = {}
    for line in (folder / "transcripts.jsonl").read_text().splitlines():
        e = json.loads(line)
        out[e["episode_id"]] = (sum(t["item"] is not None for t in e["turns"]), len(e["turns"]), int(e["hit"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    a, b = episodes(args.a), episodes(args.b)
    if a.keys() != b.keys():
        sys.exit("paired_bootstrap: the two evaluations did not play the same episodes")
    ids = sorted(a)
    metrics = {
        "Hit@1": lambda run, idx: sum(run[i][2] for i in idx) / len(idx),
        "ValidRatio": lambda run, idx: sum(run[i][0] for i in idx) / sum(run[i][1] for i in idx),
    }
    rng = random.Random(args.seed)
    draws = [[rng.choice(ids) for _ in ids] for _ in range(args.resamples)]
    print(f"{len(ids)} users, {args.resamples} resamples, seed {args.seed}")
    for name, f in metrics.items():
        rows = {"A": [f(a, d) for d in draws], "B": [f(b, d) for d in draws]}
        rows["B - A"] = [y - x for x, y in zip(rows["A"], rows["B"])]
        point = {"A": f(a, ids), "B": f(b, ids)}
        point["B - A"] = point["B"] - point["A"]
        for key, values in rows.items():
            values.sort()
            low, high = values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]
            print(f"{name:10s} {key:5s} {point[key]:+.3f} [{low:+.3f}, {high:+.3f}]")


if __name__ == "__main__":
    main()
