"""The trained Recommender on a history and candidate list that you give it: one recommendation
(`coars-fast recommend`), or a conversation where a person answers as the User (`coars-fast chat`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from coars_fast.env import EpisodeState
from coars_fast.env.parsing import ACTIONS
from coars_fast.env.prompts import Domain, recommendation_heads
from coars_fast.errors import ConfigError


def resolve_items(entries: Sequence[str], dataset=None, what: str = "--history") -> list[str]:
    """Titles for `entries`: each one an item id or an exact title of `dataset` when one is given,
    else a title as typed."""
    entries = [e.strip() for e in entries if e.strip()]
    if not entries:
        raise ConfigError(f"{what}: give at least one item")
    if dataset is None:
        return entries
    by_id = {item.item_id: item.title for item in dataset.items}
    titles = {item.title for item in dataset.items}
    out = []
    for entry in entries:
        if entry in by_id:
            out.append(by_id[entry])
        elif entry in titles:
            out.append(entry)
        else:
            raise ConfigError(f"{what}: {entry!r} is neither an item id nor a title of dataset {dataset.name}")
    return out


def parse_person_reply(line: str) -> str | None:
    """A person's answer, "skip 0.3 too loud" (action, optional score, optional reason), as the text a
    User agent would write; None when it does not start with an action or the score is not a number
    in [0, 1]."""
    match = re.match(r"\s*(\w+)\s*([-+]?\d*\.?\d+)?\s*(.*)$", line)
    if not match or match.group(1).lower() not in ACTIONS:
        return None
    action, score, reason = match.group(1).lower(), match.group(2), match.group(3).strip()
    if score is None:  # the parser gives the action's default score
        return f" {action}\nReason: {reason or '-'}"
    if not 0 <= float(score) <= 1:
        return None
    return f" {action}\nScore: {float(score):.2f}\nReason: {reason or '-'}"


def check_candidates(candidates: Sequence[str]) -> None:
    if len(set(candidates)) != len(candidates):
        raise ConfigError("--candidates: an item is listed twice")
    if len(candidates) < 2:
        raise ConfigError("--candidates: give at least two different items")


class Conversation:
    """One episode with no known true item: the Recommender answers; someone (a person) replies."""

    def __init__(self, agents, history: Sequence[str], candidates: Sequence[str], domain: Domain, turns: int = 5):
        check_candidates(candidates)
        self.agents = agents
        self.state = EpisodeState("you", history, list(enumerate(candidates)), None, max_turns=turns, domain=domain)

    @property
    def done(self) -> bool:
        return self.state.done

    def recommend(self) -> tuple[str | None, str]:
        """(the recommended title, or None when the answer names no candidate; the answer's text)."""
        heads = [recommendation_heads(self.state.titles)]
        output = self.agents.respond("rec", [self.state.rec_prompt()], choices=heads)[0]
        turn = self.state.give_recommendation(output)
        title = self.state.titles[turn.recommendation.position] if turn.recommendation.valid else None
        return title, output.text.strip()

    def reply(self, text: str) -> None:
        """The User's answer to the last recommendation, in the User agent's format."""
        self.state.give_reply(_Said(text))


class _Said:
    def __init__(self, text: str):
        self.text = text
