"""Classic baselines scored on the very candidate lists the agents get: random, popularity, SASRec."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from coars_fast.data.dataset import Dataset, Episode
from coars_fast.errors import DataError
from coars_fast.stats import hit_interval

METHODS = ("random", "popularity", "sasrec")


@dataclass(frozen=True)
class HitResult:
    method: str
    hit_at_1: float
    episodes: int
    interval: tuple[
        float, float
    ]  # 95% (clustered by user when users repeat); a point for `random`, whose value is exact


def popularity(dataset: Dataset) -> np.ndarray:
    """How often each item is the next item of a train episode."""
    counts = Counter(ep.target for ep in dataset.split("train"))
    scores = np.zeros(dataset.num_items)
    for item, count in counts.items():
        scores[item] = count
    return scores


def picks(
    method: str,
    dataset: Dataset,
    episodes: Sequence[Episode],
    candidates: Sequence[Sequence[int]],
    sasrec=None,
    batch_size: int = 1024,
) -> list[int]:
    """The item each scoring baseline recommends from each candidate list (ties: first in list
    order, which is itself a seeded shuffle)."""
    if method == "popularity":
        scores = popularity(dataset)
        return [int(c[int(np.argmax(scores[list(c)]))]) for c in candidates]
    if method != "sasrec":
        raise DataError(f"baseline {method!r} does not pick items; choose popularity or sasrec")
    if sasrec is None:
        raise DataError("the sasrec baseline needs a trained SASRec model")
    chosen = []
    for start in range(0, len(episodes), batch_size):
        batch = episodes[start : start + batch_size]
        scores = sasrec.scores([ep.history for ep in batch]).numpy()
        for row, c in zip(scores, candidates[start : start + batch_size]):
            chosen.append(int(c[int(np.argmax(row[list(c)]))]))
    return chosen


def hit_at_1(method: str, dataset: Dataset, episodes, candidates, sasrec=None) -> HitResult:
    if method not in METHODS:
        raise DataError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}")
    if not episodes:
        raise DataError("no episodes to score")
    n = len(episodes)
    if method == "random":
        # A uniform pick hits with probability exactly 1/|C|: report the expectation, not a draw.
        expected = sum(1 / len(c) for c in candidates) / n
        return HitResult(method, expected, n, (expected, expected))
    chosen = picks(method, dataset, episodes, candidates, sasrec=sasrec)
    hits = sum(int(pick == ep.target) for pick, ep in zip(chosen, episodes))
    flags = [pick == ep.target for pick, ep in zip(chosen, episodes)]
    return HitResult(method, hits / n, n, hit_interval(flags, [ep.user_id for ep in episodes]))
