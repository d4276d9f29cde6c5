"""Parsers for the agents' answers. Malformed output is data: these never raise on any string."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from coars_fast.data.dataset import title_key

ACTIONS = ("click", "star", "skip", "dislike")
# Default acceptance score per action, and the band a stated score is clamped into.
DEFAULT_SCORE = {"click": 1.0, "star": 0.75, "skip": 0.25, "dislike": 0.0}
SCORE_BAND = {"click": (0.75, 1.0), "star": (0.5, 0.75), "skip": (0.25, 0.5), "dislike": (0.0, 0.25)}
CLOSE_MATCH = 0.85  # similarity a misspelt title needs to count as a candidate
MAX_REASON_CHARS = 300

_ITEM_LABELS = ("item", "recommendation", "recommended item", "recommend", "answer", "choice")
_ACTION_LABELS = ("action", "decision", "response")
_REASON_LABELS = ("reason", "because", "why")
_ALL_LABELS = _ITEM_LABELS + _ACTION_LABELS + _REASON_LABELS + ("score",)
# One line: optional markdown decoration, a label, a colon. [ \t] (not \s) keeps it to the line, so a
# scan stays linear on text made of many blank lines.
_LABEL_LINE = re.compile(
    r"^[ \t>*#_-]*("
    + "|".join(sorted(map(re.escape, _ALL_LABELS), key=len, reverse=True))
    + r")[ \t*_]*[:：][ \t]*(.*)$",
    re.I,
)
_ACTION_WORD = re.compile(r"\b(click(?:s|ed)?|star(?:s|red)?|skip(?:s|ped)?|dislike[sd]?)\b", re.I)
_SCORE = re.compile(r"(?i)\bscore\b[^\d.\n-]{0,12}?(-?(?:\d+(?:\.\d+)?|\.\d+))\s*(%|/\s*10{1,2}\b)?")
_YEAR = re.compile(r"\s*\((?:\d{4}|\d{4}-\d{4})\)$")  # MovieLens: "Toy Story (1995)"
_MOVED_ARTICLE = re.compile(r"^(.*), (the|a|an)$")  # MovieLens: "Usual Suspects, The"


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


def _sections(text: str) -> list[tuple[str, str, list[str]]]:
    """(label, value, following unlabelled lines) for every labelled line, in order. One pass over the
    lines: linear in the length of the text."""
    out: list[tuple[str, str, list[str]]] = []
    for line in text.splitlines():
        match = _LABEL_LINE.match(line)
        if match:
            out.append((match.group(1).lower(), match.group(2), []))
        elif out:
            out[-1][2].append(line)
    return out


def _labelled(text: str, labels: Sequence[str]) -> str | None:
    """The text after the last line starting with one of `labels` and a colon."""
    found = [value for label, value, _ in _sections(text) if label in labels]
    return found[-1] if found else None


def _clean(value: str) -> str:
    value = re.sub(r"^\s*(?:\d+[.)]|[-*•])\s+", "", value)  # a list marker copied from the prompt: "10. ", "- "
    return value.strip().strip("*_`\"'“”‘’[]()<> ").rstrip(".!;,").strip("*_`\"'“”‘’ ")


def _reason(text: str) -> str:
    reason = _labelled(text, _REASON_LABELS)
    return _clean(reason or "")[:MAX_REASON_CHARS]


def _aliases(title: str) -> list[str]:
    """The keys an answer may use for a title: as listed, without a trailing year, with a moved
    article put back in front ("Usual Suspects, The (1995)" -> "the usual suspects")."""
    key = title_key(title)
    keys = [key]
    bare = _YEAR.sub("", key)
    moved = _MOVED_ARTICLE.match(bare)
    for alias in (bare, f"{moved.group(2)} {moved.group(1)}" if moved else None):
        if alias and alias not in keys and len(alias) >= 4:  # "It (1990)" -> "it" would match everywhere
            keys.append(alias)
    return keys


def match_title(answer: str, titles: Sequence[str]) -> tuple[int | None, str | None]:
    """(position, how) of the candidate `answer` names: exact, then case/space-insensitive (also
    without a year or with the article in front), then a unique close match; (None, None) when none
    or several fit."""
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
    if not same:
        alias = [i for i, t in enumerate(titles) if key in _aliases(t)[1:]]
        if len(alias) == 1:
            return alias[0], "normalized"
    # A close match for a misspelling; difflib is quadratic, so only for answers of a title's length.
    if keys and len(key) <= 2 * max(map(len, keys)) + 8:
        ratios = sorted(((difflib.SequenceMatcher(None, key, k).ratio(), i) for i, k in enumerate(keys)), reverse=True)
        if ratios[0][0] >= CLOSE_MATCH and (len(ratios) == 1 or ratios[1][0] < ratios[0][0] - 0.05):
            return ratios[0][1], "close"
    return None, None


def _mentioned(text: str, titles: Sequence[str]) -> list[int]:
    """Candidates whose title appears in `text` as whole words (case/space-insensitive), leaving out a
    title found only inside a longer mentioned one ("Queen" inside "Queen + Adam Lambert")."""
    flat = title_key(text)
    spans: dict[int, list[tuple[int, int]]] = {}
    for i, title in enumerate(titles):
        for alias in _aliases(title):
            if not alias:
                continue
            found = re.finditer(r"(?<!\w)" + re.escape(alias) + r"(?!\w)", flat)
            # a few occurrences settle it; all of them would make the check below quadratic
            spans.setdefault(i, []).extend(m.span() for m, _ in zip(found, range(16)))
        if not spans.get(i, True):
            del spans[i]
    everything = [(s, i) for i, found in spans.items() for s in found]

    def inside_longer(i: int, span: tuple[int, int]) -> bool:
        return any(
            j != i and s[0] <= span[0] and span[1] <= s[1] and s[1] - s[0] > span[1] - span[0] for s, j in everything
        )

    return sorted(i for i, found in spans.items() if not all(inside_longer(i, span) for span in found))


def _named(lines: Sequence[str], titles: Sequence[str]) -> tuple[int | None, str | None]:
    """The candidate a labelled section names: a line that is a title, else a single mention."""
    for line in lines:
        position, how = match_title(line, titles)
        if position is not None:
            return position, how
    named = _mentioned("\n".join(lines), titles)
    return (named[0], "mention") if len(named) == 1 else (None, None)


def parse_recommendation(text: str, titles: Sequence[str]) -> Recommendation:
    """The candidate a Recommender answer names. Preferred form: `Item: <title>` / `Reason: ...`.

    The last item-labelled line (with the unlabelled lines under it) that names a candidate wins, so a
    later label that names none does not cancel an earlier valid one; with none, the whole answer.
    """
    text = text if isinstance(text, str) else ""
    for label, value, rest in reversed(_sections(text)):
        if label in _ITEM_LABELS:
            position, how = _named([value, *rest], titles)
            if position is not None:
                return Recommendation(position=position, reason=_reason(text), matched_by=how)
    lines = text.strip().splitlines()
    position, how = match_title(lines[0] if lines else "", titles)
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
    matches = list(_SCORE.finditer(text))
    if not matches:
        return None
    found = matches[-1]
    number, unit = float(found.group(1)), (found.group(2) or "").replace(" ", "")
    if unit in ("%", "/100"):
        number /= 100
    elif unit == "/10":
        number /= 10
    return number


def parse_user_reply(text: str) -> UserReply:
    """A User answer: `Action: click|star|skip|dislike`, `Score: 0..1`, `Reason: ...`.

    The last action-labelled line that names exactly one action wins (a later label naming none does
    not cancel it); with none, the whole answer, when it names exactly one. No action word: "skip" is
    assumed. No score: the action's default. A score outside the action's band is clamped into it.
    """
    text = text if isinstance(text, str) else ""
    action = None
    for label, value, _ in reversed(_sections(text)):
        if label in _ACTION_LABELS and (action := _one_action(value)) is not None:
            break
    if action is None:
        action = _one_action(text)
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
