"""Parsers for the agents' answers. Malformed output is data: these never raise on any string."""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Sequence

from coars_fast.data.dataset import title_key

ACTIONS = ("click", "star", "skip", "dislike")
# Default acceptance score per action, and the band a stated score is clamped into.
DEFAULT_SCORE = {"click": 1.0, "star": 0.75, "skip": 0.25, "dislike": 0.0}
SCORE_BAND = {"click": (0.75, 1.0), "star": (0.5, 0.75), "skip": (0.25, 0.5), "dislike": (0.0, 0.25)}
CLOSE_MATCH = 0.85  # similarity a misspelt title needs to count as a candidate
MAX_REASON_CHARS = 300

_LABEL = r"(?im)^[\s>*#_-]*{}\s*[:：]\s*(.*)$"
_ITEM_LABELS = ("item", "recommendation", "recommended item", "recommend", "answer", "choice")
_ACTION_WORD = re.compile(r"\b(click(?:s|ed)?|star(?:s|red)?|skip(?:s|ped)?|dislike[sd]?)\b", re.I)
_SCORE = re.compile(r"(?i)\bscore\b[^\d.\n-]{0,12}?(-?(?:\d+(?:\.\d+)?|\.\d+))\s*(%|/\s*10{1,2}\b)?")


@dataclass(frozen=True)
class Recommendation:
    position: int | None  # index into the candidate list; None when no candidate was named
    reason: str
    matched_by: str | None  # "exact", "normalized", "close", "mention" or None

    @property
    def valid(self) -> bool:
        return self.position is not None


@dataclass(frozen=True)
class UserReply:
    action: str
    score: float
    reason: str
    action_stated: bool  # False: no action word found, "skip" assumed
    score_stated: bool  # False: no usable number found, the action's default used


def _labelled(text: str, labels: Sequence[str]) -> str | None:
    """The text after the last line starting with one of `labels` and a colon."""
    found = None
    for label in labels:
        for match in re.finditer(_LABEL.format(re.escape(label)), text):
            if found is None or match.start() > found[0]:
                found = (match.start(), match.group(1))
    return found[1] if found else None


def _clean(value: str) -> str:
    value = re.sub(r"^\s*(?:\d+[.)]|[-*•])\s+", "", value)  # a list marker copied from the prompt: "10. ", "- "
    return value.strip().strip("*_`\"'“”‘’[]()<> ").rstrip(".!;,").strip("*_`\"'“”‘’ ")


def _reason(text: str) -> str:
    reason = _labelled(text, ("reason", "because", "why"))
    return _clean(reason or "")[:MAX_REASON_CHARS]


def match_title(answer: str, titles: Sequence[str]) -> tuple[int | None, str | None]:
    """(position, how) of the candidate `answer` names: exact, then case/space-insensitive, then a
    unique close match; (None, None) when none or several fit."""
    answer = _clean(answer)
    if not answer:
        return None, None
    exact = [i for i, t in enumerate(titles) if t == answer]
    if len(exact) == 1:
        return exact[0], "exact"
    key = title_key(answer)
    keys = [title_key(t) for t in titles]
    same = [i for i, k in enumerate(keys) if k == key]
    if len(same) == 1:
        return same[0], "normalized"
    ratios = sorted(((difflib.SequenceMatcher(None, key, k).ratio(), i) for i, k in enumerate(keys)), reverse=True)
    if ratios and ratios[0][0] >= CLOSE_MATCH and (len(ratios) == 1 or ratios[1][0] < ratios[0][0] - 0.05):
        return ratios[0][1], "close"
    return None, None


def _mentioned(text: str, titles: Sequence[str]) -> list[int]:
    """Candidates whose title appears in `text` as whole words (case/space-insensitive)."""
    flat = title_key(text)
    return [i for i, t in enumerate(titles) if re.search(r"(?<!\w)" + re.escape(title_key(t)) + r"(?!\w)", flat)]


def parse_recommendation(text: str, titles: Sequence[str]) -> Recommendation:
    """The candidate a Recommender answer names. Preferred form: `Reason: ...` / `Item: <title>`."""
    text = text if isinstance(text, str) else ""
    labelled = _labelled(text, _ITEM_LABELS)
    if labelled is not None:
        position, how = match_title(labelled, titles)
        if position is None:
            named = _mentioned(labelled, titles)
            position, how = (named[0], "mention") if len(named) == 1 else (None, None)
    else:
        position, how = match_title(text.strip().splitlines()[0] if text.strip() else "", titles)
        if position is None:
            named = _mentioned(text, titles)
            position, how = (named[0], "mention") if len(named) == 1 else (None, None)
    return Recommendation(position=position, reason=_reason(text), matched_by=how)


def clamp_to_band(score: float, action: str) -> float:
    low, high = SCORE_BAND[action]
    if action != "click":  # bands are half-open [low, high) except click's [0.75, 1]
        high = math.nextafter(high, -math.inf)
    return min(max(score, low), high)


def _score(text: str) -> float | None:
    """The number after the last "score" in the text: 0.8, .8, 80%, 8/10 or 80/100."""
    found = None
    for found in _SCORE.finditer(text):
        pass
    if found is None:
        return None
    number, unit = float(found.group(1)), (found.group(2) or "").replace(" ", "")
    if unit in ("%", "/100"):
        number /= 100
    elif unit == "/10":
        number /= 10
    return number


def parse_user_reply(text: str) -> UserReply:
    """A User answer: `Action: click|star|skip|dislike`, `Score: 0..1`, `Reason: ...`.

    No action word: "skip" is assumed. No score: the action's default. A score outside the action's
    band is clamped into it.
    """
    text = text if isinstance(text, str) else ""
    labelled = _labelled(text, ("action", "decision", "response"))
    action = _one_action(labelled) if labelled is not None else _one_action(text)
    score = _score(text)
    return UserReply(
        action=action or "skip",
        score=DEFAULT_SCORE[action or "skip"] if score is None else clamp_to_band(score, action or "skip"),
        reason=_reason(text),
        action_stated=action is not None,
        score_stated=score is not None,
    )


def _one_action(text: str) -> str | None:
    """The action `text` names; None when it names none or several (an echo of the format line)."""
    named = {next(a for a in ACTIONS if w.lower().startswith(a)) for w in _ACTION_WORD.findall(text)}
    return named.pop() if len(named) == 1 else None
