"""The episode state machine: turns, shared memory, termination and outcome. No model involved:
agents' outputs arrive from outside as any object with a `.text` (kept as-is in the record)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coars_fast.env import prompts
from coars_fast.env.parsing import Recommendation, UserReply, parse_recommendation, parse_user_reply
from coars_fast.env.prompts import GENERIC, Domain

MAX_TURNS = 5


def _text(output: Any) -> str:
    text = getattr(output, "text", "")
    return text if isinstance(text, str) else ""


@dataclass(frozen=True)
class PeerEvidence:
    count: int  # p_t: how many of the k nearest training users interacted with the item
    k: int
    similarity: float  # q_t in [-1, 1]: their mean cosine similarity to this user (0 when none)


@dataclass
class Turn:
    number: int  # 1-based
    rec_prompt: list[dict]
    rec_output: Any
    recommendation: Recommendation
    item: int | None  # the recommended item, None when the answer named no candidate
    hit: bool
    user_prompt: list[dict] | None = None
    user_output: Any = None
    reply: UserReply | None = None
    peers: PeerEvidence | None = None


class EpisodeState:
    """One user, one candidate list, at most `max_turns` turns of Recommender then User.

    Each turn the Recommender names a candidate; if it names none the turn is invalid (a miss) and
    the User is not asked. The episode ends when the User clicks or after `max_turns` turns; the
    final recommendation is the last turn's item.
    """

    def __init__(
        self,
        episode_id: str,
        history: Sequence[str],
        candidates: Sequence[tuple[int, str]],
        target: int | None,  # None in a live conversation, where no true item is known (no hit)
        max_turns: int = MAX_TURNS,
        domain: Domain = GENERIC,
        likes: frozenset[int] | None = None,  # every item the user would like, where the data knows it
    ):
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if target is not None and target not in [item for item, _ in candidates]:
            raise ValueError(f"episode {episode_id}: the target item {target} is not among the candidates")
        self.episode_id, self.history, self.target = episode_id, list(history), target
        self.candidates = list(candidates)
        self.titles = [title for _, title in candidates]
        self.max_turns, self.domain, self.likes = max_turns, domain, likes
        self.turns: list[Turn] = []

    # -- whose move -------------------------------------------------------------------------------
    @property
    def awaiting(self) -> str | None:
        """ "rec", "user", or None once the episode has ended."""
        if not self.turns:
            return "rec"
        last = self.turns[-1]
        if last.recommendation.valid and last.reply is None:
            return "user"
        if (last.reply is not None and last.reply.action == "click") or last.number == self.max_turns:
            return None
        return "rec"

    @property
    def done(self) -> bool:
        return self.awaiting is None

    def _expect(self, who: str) -> None:
        if self.awaiting != who:
            raise RuntimeError(f"episode {self.episode_id}: expected a {self.awaiting} move, not {who}")

    # -- the two moves -----------------------------------------------------------------------------
    def rec_prompt(self) -> list[dict]:
        self._expect("rec")
        return prompts.recommender_messages(self.domain, self.history, self.titles, self.memory())

    def give_recommendation(self, output: Any) -> Turn:
        prompt = self.rec_prompt()
        rec = parse_recommendation(prompts.answer_prefix(prompt) + _text(output), self.titles)
        item = self.candidates[rec.position][0] if rec.valid else None
        turn = Turn(len(self.turns) + 1, prompt, output, rec, item, hit=item == self.target)
        self.turns.append(turn)
        return turn

    def user_prompt(self, peers: PeerEvidence | None = None) -> list[dict]:
        self._expect("user")
        turn = self.turns[-1]
        evidence = prompts.peer_sentence(self.domain, peers.count, peers.k) if peers else None
        return prompts.user_messages(
            self.domain,
            self.history,
            self.titles[turn.recommendation.position],
            turn.recommendation.reason,
            self.memory(upto=turn.number - 1),
            evidence,
        )

    def give_reply(self, output: Any, peers: PeerEvidence | None = None) -> Turn:
        turn = self.turns[-1]
        turn.user_prompt = self.user_prompt(peers)
        turn.user_output, turn.peers = output, peers
        turn.reply = parse_user_reply(prompts.answer_prefix(turn.user_prompt) + _text(output))
        return turn

    # -- memory and outcome --------------------------------------------------------------------------
    def memory(self, upto: int | None = None) -> list[str]:
        """M_t: one line per completed turn (both messages), append-only, rendered in full."""
        return [self._memory_line(t) for t in self.turns[: len(self.turns) if upto is None else upto]]

    def _memory_line(self, turn: Turn) -> str:
        if not turn.recommendation.valid:
            return f"Turn {turn.number}: the recommender named no candidate."
        title = self.titles[turn.recommendation.position]
        line = f'Turn {turn.number}: the recommender suggested "{title}"'
        line += f" ({turn.recommendation.reason})." if turn.recommendation.reason else "."
        if turn.reply is not None:
            line += f" The user chose {turn.reply.action} (score {turn.reply.score:.2f})"
            line += f": {turn.reply.reason}" if turn.reply.reason else "."
        return line

    @property
    def final_item(self) -> int | None:
        return self.turns[-1].item if self.turns else None

    @property
    def hit(self) -> bool:
        """Hit@1: the final recommendation is the held-out next item."""
        return self.final_item == self.target

    @property
    def valid_turns(self) -> int:
        return sum(t.recommendation.valid for t in self.turns)

    # -- hindsight (the teacher's extra context) ---------------------------------------------------
    def diagnosis(self) -> str:
        """Deterministic per-turn diagnosis of the whole episode."""
        lines = []
        for t in self.turns:
            if not t.recommendation.valid:
                lines.append(f"Turn {t.number}: the recommender named no candidate.")
                continue
            title = self.titles[t.recommendation.position]
            did = f"the user chose {t.reply.action}" if t.reply else "the user was not asked"
            verdict = "is" if t.hit else "is not"
            lines.append(f'Turn {t.number}: recommended "{title}", {did}; "{title}" {verdict} the true item.')
        return "\n".join(lines)

    @property
    def target_title(self) -> str:
        return self.titles[[item for item, _ in self.candidates].index(self.target)]

    def diagnosis_prompt(self) -> list[dict]:
        """The chat in which an agent writes its own diagnosis (instead of the template)."""
        return prompts.diagnosis_messages(self.domain, self.memory(), self.target_title)

    def hindsight(self, diagnosis: str | None = None) -> str:
        target_title = self.target_title
        return (
            f"Hindsight (known only after the episode): the {self.domain.noun} this user actually chose next is "
            f'"{target_title}".\n' + (diagnosis if diagnosis is not None else self.diagnosis())
        )

    def teacher_prompt(self, turn: Turn, agent: str, diagnosis: str | None = None) -> list[dict]:
        """The same agent's prompt for `turn`, with the hindsight block: the self-distillation teacher."""
        student = turn.rec_prompt if agent == "rec" else turn.user_prompt
        if student is None:
            raise ValueError(f"turn {turn.number} has no {agent} prompt")
        return prompts.with_hindsight(student, self.hindsight(diagnosis), prompts.STATIC_PARAGRAPHS[agent])
