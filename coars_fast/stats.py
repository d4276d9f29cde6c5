"""Small statistics shared by baselines and evaluation."""

from __future__ import annotations

import math


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (well-behaved near 0 and 1, unlike the normal one)."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def hit_interval(hits, users, z: float = 1.96, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of a hit rate. One episode per user (or no user ids): Wilson. Several episodes of
    one user (e.g. every history prefix of a LastFM user) are not independent: a percentile bootstrap
    that resamples users, with their episodes (seeded, so a report is reproducible)."""
    import numpy as np

    hits = [bool(h) for h in hits]
    if not hits:
        return (0.0, 1.0)
    if any(u is None for u in users) or len(set(users)) == len(users):
        return wilson_interval(sum(hits), len(hits), z)
    by_user: dict = {}
    for hit, user in zip(hits, users):
        total = by_user.setdefault(user, [0, 0])
        total[0], total[1] = total[0] + hit, total[1] + 1
    sums = np.array(list(by_user.values()), dtype=float)  # [users, (hits, episodes)]
    draws = np.random.default_rng(seed).integers(0, len(sums), size=(reps, len(sums)))
    rates = sums[draws, 0].sum(axis=1) / sums[draws, 1].sum(axis=1)
    return (float(np.quantile(rates, 0.025)), float(np.quantile(rates, 0.975)))
