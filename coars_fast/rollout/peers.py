"""Peer evidence from SASRec user representations: p_t and q_t of docs/METHOD.md.

The peers of a user are the k training users nearest to them (cosine similarity of SASRec
representations). For a recommended item, p_t is how many of those peers interacted with it and q_t
the mean similarity of those who did (0 when none did).

Where the data has user ids, a training user is a user's training sequence; where it has none
(LLaRA LastFM), each training history is a user. A user is never their own peer: same user id, or
(without ids) a training history that shares more than half of the query's history, which is how the
sliding windows of one person's listening look.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence

import torch

from coars_fast.cache import atomic_write
from coars_fast.data.dataset import Dataset, Episode
from coars_fast.env import EpisodeState, PeerEvidence

PEERS = 10
_SAME_PERSON_OVERLAP = 0.5


class PeerIndex:
    def __init__(self, sasrec, dataset: Dataset, k: int = PEERS):
        self.sasrec, self.k = sasrec, k
        users = _training_users(dataset.split("train"))
        self.user_ids = [user for user, _, _ in users]
        self.items = [items for _, _, items in users]
        reps = _representations(sasrec, [seq for _, seq, _ in users])
        self.reps = torch.nn.functional.normalize(reps, dim=1)
        self._neighbours: dict[str, tuple[list[int], list[float]]] = {}

    def neighbours(self, user_id: str | None, history: Sequence[int], key: str) -> tuple[list[int], list[float]]:
        """Indices and cosine similarities of the k nearest training users (cached under `key`)."""
        if key not in self._neighbours:
            query = torch.nn.functional.normalize(self.sasrec.encode([history]), dim=1)[0]
            sims = self.reps @ query
            order = torch.argsort(sims, descending=True)
            chosen, seen = [], set(history)
            for j in order.tolist():
                if self._same_person(j, user_id, seen):
                    continue
                chosen.append(j)
                if len(chosen) == self.k:
                    break
            self._neighbours[key] = (chosen, [float(sims[j]) for j in chosen])
        return self._neighbours[key]

    def _same_person(self, j: int, user_id: str | None, history: set[int]) -> bool:
        if self.user_ids[j] is not None:  # training users with ids (never a LastFM row)
            return self.user_ids[j] == user_id
        return len(history & self.items[j]) > _SAME_PERSON_OVERLAP * max(1, len(history))

    def evidence(self, episode: Episode, item: int, key: str | None = None) -> PeerEvidence:
        peers, sims = self.neighbours(episode.user_id, episode.history, key or episode.episode_id)
        chose = [s for j, s in zip(peers, sims) if item in self.items[j]]
        return PeerEvidence(count=len(chose), k=self.k, similarity=sum(chose) / len(chose) if chose else 0.0)

    def lookup(self, episodes: dict[str, Episode]):
        """A PeerLookup for the runner: states are matched to their episodes by episode id."""

        def peers_of(state: EpisodeState, item: int) -> PeerEvidence:
            return self.evidence(episodes[state.episode_id], item)

        return peers_of


def _representations(sasrec, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """SASRec's representation of each training user [N, hidden]. Beside a cached SASRec they are
    cached too (encoding LastFM's 47,872 training users takes ~2 s of every start), tied to the
    weights file's SHA-256 so that a retrained SASRec never meets stale ones."""
    weights = getattr(sasrec, "cache_path", None)
    path = weights.with_suffix(".peers.pt") if weights is not None else None
    digest = hashlib.sha256(weights.read_bytes()).hexdigest() if path is not None else None
    if path is not None and path.exists():
        try:
            saved = torch.load(path, weights_only=True)
            if saved["weights"] == digest and saved["reps"].shape[0] == len(sequences):
                return saved["reps"]
        except (OSError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError):
            pass  # unreadable or from another version: encoded again and rewritten below
    with torch.no_grad():
        reps = torch.cat([sasrec.encode(sequences[i : i + 4096]) for i in range(0, len(sequences), 4096)])
    if path is not None:
        atomic_write(path, lambda tmp: torch.save({"reps": reps, "weights": digest}, tmp))
    return reps


def _training_users(train: Sequence[Episode]) -> list[tuple[str | None, tuple[int, ...], frozenset[int]]]:
    """(user id, most recent sequence, items interacted with) per training user."""
    if not train or train[0].user_id is None:
        return [(None, ep.history + (ep.target,), frozenset(ep.history) | {ep.target}) for ep in train]
    latest: dict[str, Episode] = {}
    items: dict[str, set[int]] = {}
    for ep in train:  # a user's episodes come in time order: the last one is the latest
        latest[ep.user_id] = ep
        items.setdefault(ep.user_id, set()).update(ep.history + (ep.target,))
    return [(u, ep.history + (ep.target,), frozenset(items[u])) for u, ep in latest.items()]
