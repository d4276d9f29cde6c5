"""Candidate lists: the target plus negatives, deterministic for (seed, episode id), shuffled.

Mode `random` (LLaRA / AFL protocol): 19 items the user never interacted with, uniformly.
Mode `sasrec` (the CoARS paper's setting): SASRec's top items outside what the user has seen, with
the target swapped in for the last one when SASRec missed it.
Within a list no two items share a title (the agents name items by title), and no negative is an
item the user has seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from coars_fast.data.dataset import Dataset, Episode, title_key
from coars_fast.errors import DataError

NUM_CANDIDATES = 20
MODES = ("random", "sasrec")


def episode_rng(seed: int, episode_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, episode id): same in every process and run."""
    digest = hashlib.blake2b(f"{seed}|{episode_id}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


class CandidateBuilder:
    def __init__(
        self,
        dataset: Dataset,
        mode: str = "random",
        num_candidates: int = NUM_CANDIDATES,
        seed: int = 0,
        sasrec=None,
    ):
        if mode not in MODES:
            raise DataError(f"unknown candidate mode {mode!r}; choose one of {', '.join(MODES)}")
        if mode == "sasrec" and sasrec is None:
            raise DataError("candidate mode 'sasrec' needs a trained SASRec model")
        if num_candidates < 2 or num_candidates > dataset.num_items:
            raise DataError(f"num_candidates must lie in [2, {dataset.num_items}], got {num_candidates}")
        self.dataset, self.mode, self.k, self.seed, self.sasrec = dataset, mode, num_candidates, seed, sasrec
        self._keys = [title_key(item.title) for item in dataset.items]

    def build(self, episodes: Sequence[Episode], batch_size: int = 512) -> list[tuple[int, ...]]:
        """One shuffled candidate list per episode, in the order given."""
        if self.mode == "random":
            return [self._take(ep, self._random_order(ep), episode_rng(self.seed, ep.episode_id)) for ep in episodes]
        lists = []
        for start in range(0, len(episodes), batch_size):
            batch = episodes[start : start + batch_size]
            for ep, ranking in zip(batch, self.sasrec.rank([ep.history for ep in batch])):
                lists.append(self._take(ep, ranking, episode_rng(self.seed, ep.episode_id)))
        return lists

    def _random_order(self, ep: Episode) -> Iterator[int]:
        rng = episode_rng(self.seed ^ 0x5EED, ep.episode_id)
        n = self.dataset.num_items
        # Uniform draws with rejection (the seen set is tiny next to the catalogue); a full
        # permutation afterwards covers a user who has seen most of a small catalogue.
        yield from rng.integers(n, size=20 * self.k)
        yield from rng.permutation(n)

    def _take(self, ep: Episode, order: Iterable[int], rng: np.random.Generator) -> tuple[int, ...]:
        """The target plus the first eligible items of `order`, shuffled.

        In sasrec mode `order` is SASRec's ranking, so the list is SASRec's top-k outside what the
        user has seen, with the target swapped in for the last one when SASRec missed it.
        """
        chosen, keys = [ep.target], {self._keys[ep.target]}
        for item in order:
            item = int(item)
            if item in ep.seen or self._keys[item] in keys:
                continue
            chosen.append(item)
            keys.add(self._keys[item])
            if len(chosen) == self.k:
                return tuple(chosen[i] for i in rng.permutation(self.k))
        raise DataError(
            f"episode {ep.episode_id}: only {len(chosen)} eligible candidates (need {self.k}); "
            "the catalogue is too small for this user"
        )
