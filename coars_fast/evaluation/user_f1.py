"""User-agent F1 (the AFL protocol): after one episode, the User agent says like or dislike for 10
items the user really chose next and 10 they never touched; micro precision, recall and F1."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from coars_fast.data.candidates import episode_rng
from coars_fast.data.dataset import MIN_HISTORY, Dataset, Episode, title_key
from coars_fast.env import EpisodeState
from coars_fast.env.prompts import preference_messages

FUTURE = 10  # positives per user
NEGATIVES = 10
LIKE, DISLIKE = ("like", "Like"), ("dislike", "Dislike")
CASES_PER_CALL = 10  # users whose questions share one forward (its logits: 200 x vocabulary floats)


@dataclass(frozen=True)
class PreferenceCase:
    episode: Episode  # history before the cut; target = the first future item
    positives: tuple[int, ...]  # the next items the user really chose
    negatives: tuple[int, ...]  # items the user never interacted with


def preference_cases(dataset: Dataset, n: int, seed: int = 0, history_len: int = 10) -> list[PreferenceCase]:
    """Up to `n` users (a seeded sample) with at least MIN_HISTORY + 10 items in their sequence."""
    eligible = [u for u, s in dataset.user_sequences.items() if len(s) >= MIN_HISTORY + FUTURE]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(eligible), size=min(n, len(eligible)), replace=False)) if eligible else []
    cases = []
    for index in chosen:
        user = eligible[index]
        seq = dataset.user_sequences[user]
        cut = len(seq) - FUTURE
        history = tuple(seq[:cut][-history_len:])
        likes = dataset.user_likes.get(user)
        # with known likes (synthetic), a future item outside them is noise, not a preference
        positives = tuple(dict.fromkeys(i for i in seq[cut:] if i not in history and (likes is None or i in likes)))
        episode = Episode(f"f1/{user}", user, history, seq[cut], frozenset(seq))
        excluded = episode.seen | (likes or frozenset())  # negatives: never touched, and not liked
        cases.append(
            PreferenceCase(episode, positives, _negatives(dataset, episode.episode_id, excluded, positives, seed))
        )
    return cases


def _negatives(
    dataset: Dataset, episode_id: str, excluded: frozenset[int], positives: Sequence[int], seed: int
) -> tuple[int, ...]:
    rng = episode_rng(seed, "negatives/" + episode_id)
    keys = {title_key(dataset.title(i)) for i in positives}
    chosen = []
    for item in rng.permutation(dataset.num_items):
        key = title_key(dataset.title(int(item)))
        if int(item) not in excluded and key not in keys:
            chosen.append(int(item))
            keys.add(key)
            if len(chosen) == NEGATIVES:
                break
    return tuple(chosen)


def _first_tokens(tokenizer, words: Sequence[str]) -> list[int]:
    return sorted({tokenizer.encode(w, add_special_tokens=False)[0] for w in words})


def ask_preferences(agents, dataset: Dataset, cases: Sequence[PreferenceCase], states: Sequence[EpisodeState]) -> dict:
    """Constrained answer per item: like when log p(like) > log p(dislike) as the first answer token."""
    like, dislike = _first_tokens(agents.tokenizer, LIKE), _first_tokens(agents.tokenizer, DISLIKE)
    if set(like) & set(dislike):
        raise RuntimeError("this tokenizer gives 'like' and 'dislike' the same first token")
    tp = fp = fn = tn = 0
    # several users' questions per forward: longer streams run at a better rate (models/prefill.py)
    for start in range(0, len(cases), CASES_PER_CALL):
        chunk = list(zip(cases, states))[start : start + CASES_PER_CALL]
        asked = [(case, i) for case, _ in chunk for i in case.positives + case.negatives]
        chats = [
            preference_messages(state.domain, state.history, state.memory(), dataset.title(i))
            for case, state in chunk
            for i in case.positives + case.negatives
        ]
        logp = agents.next_token_logprobs("user", chats)
        says_like = (torch.logsumexp(logp[:, like], 1) > torch.logsumexp(logp[:, dislike], 1)).tolist()
        for (case, item), liked in zip(asked, says_like):
            positive = item in case.positives
            tp += liked and positive
            fp += liked and not positive
            fn += positive and not liked
            tn += not liked and not positive
    return preference_scores({"tp": tp, "fp": fp, "fn": fn, "tn": tn}, len(cases))


def preference_scores(counts: dict[str, int], users: int) -> dict:
    """Micro precision, recall and F1 from the answer counts (summed over ranks or user shares)."""
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"users": users, "precision": precision, "recall": recall, "f1": f1, "counts": dict(counts)}
