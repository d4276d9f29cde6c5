"""The dataset model every loader produces: an item catalogue and episodes per split."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from coars_fast.errors import DataError

HISTORY_LEN = 10  # items of history shown to the agents (LLaRA / AFL protocol)
MIN_HISTORY = 3  # shorter histories are dropped, as LLaRA and AFL do


def title_key(title: str) -> str:
    """Case- and space-insensitive form of a title: two items with the same key are ambiguous."""
    return re.sub(r"\s+", " ", title).strip().casefold()


@dataclass(frozen=True)
class Item:
    item_id: str  # the dataset's own id (LLaRA index, MovieLens movie id, ASIN, ...)
    title: str
    attrs: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Episode:
    """One recommendation problem: a history (oldest first) and the held-out next item.

    Items are indices into `Dataset.items`. `seen` holds every item the user is known to have
    interacted with, so candidate negatives avoid all of them (for LLaRA rows, which carry no
    user id, that is the history and the target).
    """

    episode_id: str
    user_id: str | None
    history: tuple[int, ...]
    target: int
    seen: frozenset[int]


@dataclass
class Dataset:
    name: str
    items: list[Item]
    splits: dict[str, list[Episode]]
    # Full chronological sequence per user, where the data has user ids (used for peers and F1).
    user_sequences: dict[str, tuple[int, ...]] = field(default_factory=dict)
    user_note: str = ""  # where `user_sequences` come from, when not from the episodes themselves
    # Rows per source file (before short histories are filtered out), for `data check`.
    source_rows: dict[str, int] = field(default_factory=dict)
    # Items whose title is a placeholder (e.g. an ASIN), when real titles are missing.
    untitled: frozenset[int] = frozenset()
    # Ground-truth likes per user, where the data knows them (synthetic): user-agent F1 then scores
    # against them instead of "the next items vs items never touched".
    user_likes: dict[str, frozenset[int]] = field(default_factory=dict)
    # How the agents' prompts name an item and what users did with one ("book", "read"); empty: the
    # built-in wording of a known dataset, else "item" / "interacted with". From a jsonl folder's
    # meta.json, or the config's data.item_noun / data.user_verb.
    item_noun: str = ""
    user_verb: str = ""

    @property
    def num_items(self) -> int:
        return len(self.items)

    def title(self, index: int) -> str:
        return self.items[index].title

    def split(self, name: str) -> list[Episode]:
        if name not in self.splits:
            raise DataError(f"dataset {self.name!r} has no split {name!r}; it has {sorted(self.splits)}")
        return self.splits[name]


def leave_last_out(
    sequences: Mapping[str, Sequence[int]],
    history_len: int = HISTORY_LEN,
    min_history: int = MIN_HISTORY,
) -> dict[str, list[Episode]]:
    """Per user: last item -> test, second last -> val, every earlier position -> train.

    Each position k with at least `min_history` earlier items becomes one episode whose history
    is the `history_len` items before it.
    """
    splits: dict[str, list[Episode]] = {"train": [], "val": [], "test": []}
    for user_id, seq in sequences.items():
        seen = frozenset(seq)
        n = len(seq)
        for k in range(min_history, n):
            split = "test" if k == n - 1 else "val" if k == n - 2 else "train"
            splits[split].append(
                Episode(
                    episode_id=f"{user_id}/{k}",
                    user_id=user_id,
                    history=tuple(seq[max(0, k - history_len) : k]),
                    target=seq[k],
                    seen=seen,
                )
            )
    return splits
