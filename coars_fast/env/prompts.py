"""Prompt templates as chat messages. The model's own chat template turns them into tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coars_fast.env.parsing import ACTIONS, SCORE_BAND


@dataclass(frozen=True)
class Domain:
    noun: str  # what an item is
    verb: str  # what a user did with past items


DOMAINS = {
    "lastfm": Domain("music artist", "listened to"),
    "movielens": Domain("movie", "watched"),
    "instruments": Domain("musical instrument product", "bought"),
    "synthetic": Domain("album", "listened to"),
}
GENERIC = Domain("item", "interacted with")

# The answer formats live in the system prompts: the part of a prompt that never changes between
# turns comes first, so a prompt cache can reuse it (only memory and question change). No
# placeholder such as "<title>" and no example title: the 135M model copies either verbatim (an
# example title was the answer to 138 of 141 invalid free turns on LastFM, docs/RESULTS.md).
REC_SYSTEM = (
    "You are a recommender agent. From a list of candidates, pick the one {noun} this user is most "
    "likely to want next. Learn from the user's earlier reactions in this conversation. Answer in two "
    'lines: first "Item:" and the title of one candidate, copied exactly as listed; then "Reason:" '
    "and one short sentence."
)
# The User's example is made of allowed values only (an action and a score): copying it is a valid answer.
USER_SYSTEM = (
    "You are simulating a user of a recommender system. Judge each recommendation the way this user, "
    "with this history, would. Be selective: most of what you are shown is not what you want next. "
    "Choose one action: click if you want it now, star if it is interesting, "
    "skip if not now, dislike if it is not for you. Then give a score from 0 to 1 for how well it fits "
    "you, and one short sentence of reason. An example answer:\n"
    "Action: skip\n"
    "Score: 0.4\n"
    "Reason: I like this style, but not right now."
)
PREFERENCE_SYSTEM = (
    "You are simulating a user of a recommender system. Judge items the way this user, with this history, would."
)
REC_QUESTION = "Which candidate should the user get next?"
USER_QUESTION = "How do you react?"
# Each answer is started for the agent (its first label), which keeps small models on the format.
REC_ANSWER_PREFIX = "Item:"
USER_ANSWER_PREFIX = "Action:"


def _chat(system: str, parts: Sequence[str], answer_prefix: str) -> list[dict]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": "\n\n".join(p for p in parts if p)},
        {"role": "assistant", "content": answer_prefix},
    ]


def _numbered(titles: Sequence[str]) -> str:
    return "\n".join(f"{i}. {t}" for i, t in enumerate(titles, start=1))


def render_memory(lines: Sequence[str]) -> str:
    return "Conversation so far:\n" + "\n".join(lines) if lines else ""


def recommender_messages(
    domain: Domain, history: Sequence[str], candidates: Sequence[str], memory: Sequence[str]
) -> list[dict]:
    parts = [
        f"The user {domain.verb} these, oldest first:\n{_numbered(history)}",
        "Candidates:\n" + "\n".join(f"- {t}" for t in candidates),
        render_memory(memory),
        REC_QUESTION,
    ]
    return _chat(REC_SYSTEM.format(noun=domain.noun), parts, REC_ANSWER_PREFIX)


# Grounded decoding (coars_fast/models/grounding.py) draws an answer's head from these strings: they
# continue the answer prefix ("Item:" / "Action:") up to the free reason.
def recommendation_heads(candidates: Sequence[str]) -> list[str]:
    """Every Recommender answer head: one per candidate title."""
    return [f" {title}\nReason:" for title in candidates]


def user_heads() -> list[str]:
    """Every User answer head: an action and a one-decimal score inside that action's band."""
    heads = []
    for action in ACTIONS:
        low, high = SCORE_BAND[action]
        for tenth in range(11):
            score = tenth / 10
            if low <= score < high or (action == "click" and score == high):
                heads.append(f" {action}\nScore: {score:.1f}\nReason:")
    return heads


def peer_sentence(domain: Domain, count: int, peers: int) -> str:
    """The peer evidence p_t shown to the User agent."""
    return f"Of the {peers} users most similar to you, {count} chose this {domain.noun}."


def user_messages(
    domain: Domain,
    history: Sequence[str],
    item: str,
    reason: str,
    memory: Sequence[str],
    peer_evidence: str | None = None,
) -> list[dict]:
    suggestion = f'The recommender now suggests the {domain.noun} "{item}".'
    if reason:
        suggestion += f" Its reason: {reason}"
    parts = [
        f"You {domain.verb} these, oldest first:\n{_numbered(history)}",
        render_memory(memory),
        suggestion,
        peer_evidence or "",
        USER_QUESTION,
    ]
    return _chat(USER_SYSTEM, parts, USER_ANSWER_PREFIX)


def answer_prefix(messages: Sequence[dict]) -> str:
    """The start of the answer written for the agent (an unfinished assistant message), or ""."""
    return messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else ""


# Paragraphs of an agent's prompt that every turn of an episode shares (history; the Recommender's
# candidates too): the teacher's hindsight block goes right after them, before the conversation, so
# the teacher prompts of an episode's turns share it as one prefix (a token tree computes it once).
STATIC_PARAGRAPHS = {"rec": 2, "user": 1}


def with_hindsight(messages: Sequence[dict], hindsight: str, after: int) -> list[dict]:
    """The teacher's prompt: the student's, with the hindsight block as a paragraph of its own after
    the first `after` paragraphs of the last user message (and never after the question)."""
    out = [dict(m) for m in messages]
    last_user = max(i for i, m in enumerate(out) if m["role"] == "user")
    paragraphs = out[last_user]["content"].split("\n\n")
    at = min(after, len(paragraphs) - 1)
    out[last_user]["content"] = "\n\n".join(paragraphs[:at] + [hindsight] + paragraphs[at:])
    return out


def preference_messages(domain: Domain, history: Sequence[str], memory: Sequence[str], item: str) -> list[dict]:
    """A yes/no question for the User agent: would you like this item? (user-agent F1)."""
    parts = [
        f"You {domain.verb} these, oldest first:\n{_numbered(history)}",
        render_memory(memory),
        f'Would you like the {domain.noun} "{item}"? Answer with one word: like or dislike.',
    ]
    return [
        {"role": "system", "content": PREFERENCE_SYSTEM},
        {"role": "user", "content": "\n\n".join(p for p in parts if p)},
    ]


DIAGNOSIS_SYSTEM = (
    "You review a finished recommendation conversation and explain in two short sentences what went right or wrong."
)


def diagnosis_messages(domain: Domain, memory: Sequence[str], target: str) -> list[dict]:
    """Asks an agent to write the hindsight diagnosis of its own episode (`--diagnosis self`)."""
    parts = [render_memory(memory), f'The {domain.noun} the user actually chose next was "{target}".', "Diagnosis:"]
    return [{"role": "system", "content": DIAGNOSIS_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]
