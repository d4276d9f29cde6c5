"""Per-turn rewards of the two agents (CoARS Eq. 7 and 8) and the exclusion rule.

R_rec  = (2 hit_t - 1) (0.5 + 0.5 s_t) D_t,            D_t = gamma^(t-1)
R_user = (2 hit_t - 1) (2 s_t - 1) (1 - alpha q_t (2 s_t - 1))

A turn whose item is not the logged next item but that the User accepted (click or star) is left
out of both agents' losses: the data may simply not log that preference. Where the data knows every
item the user likes (the synthetic benchmark), only a liked item is left out. `exclude_from` names the
agents whose losses leave such a turn out: ("rec",) keeps it in the User's loss as a false positive.
A turn whose answer named no candidate gets `invalid_reward` D_t for the Recommender (the User was not asked). A User answer
that states no action (or several: an echo of the format line) gets `invalid_reward`, so that an
unreadable answer never earns what a deliberate "skip" of a wrong item earns; the Recommender's
reward then uses the assumed "skip" and its default score.
"""

from __future__ import annotations

from dataclasses import dataclass

from coars_fast.env.episode import EpisodeState, Turn

KINDS = ("interaction", "outcome")
POSITIVE_ACTIONS = ("click", "star")
AGENTS = ("rec", "user")


@dataclass(frozen=True)
class RewardSettings:
    kind: str = "interaction"  # "outcome": every turn gets 2 Hit@1 - 1 of its episode (sparse ablation)
    gamma: float = 0.9
    alpha: float = 0.1
    exclude_unlogged_positive: bool = True
    # The paper leaves the turn out of both losses. On LastFM the User then paid nothing for accepting
    # a wrong item, learnt to accept every first one, and with every episode one excluded turn long,
    # learning stopped (docs/RESULTS.md); ("rec",) makes the User pay for it as a false positive.
    exclude_from: tuple[str, ...] = AGENTS
    invalid_reward: float = -1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"reward kind must be one of {KINDS}, got {self.kind!r}")
        if not set(self.exclude_from) <= set(AGENTS):
            raise ValueError(f"exclude_from must be a subset of {AGENTS}, got {self.exclude_from!r}")

    def leaves_out(self, agent: str, reward: TurnReward) -> bool:
        """Whether `agent`'s loss leaves this turn out (the exclusion rule)."""
        return reward.excluded and agent in self.exclude_from


@dataclass(frozen=True)
class TurnReward:
    rec: float
    user: float | None  # None when the User was not asked
    excluded: bool


def stage_discount(turn: int, gamma: float) -> float:
    return gamma ** (turn - 1)


def rec_reward(hit: bool, score: float, turn: int, gamma: float) -> float:
    return (2 * hit - 1) * (0.5 + 0.5 * score) * stage_discount(turn, gamma)


def user_reward(hit: bool, score: float, similarity: float, alpha: float) -> float:
    agreement = 2 * score - 1
    return (2 * hit - 1) * agreement * (1 - alpha * similarity * agreement)


def is_excluded(turn: Turn, settings: RewardSettings, likes: frozenset[int] | None = None) -> bool:
    """A wrong item the User accepted, unless the data knows every item the user likes (`likes`, the
    synthetic benchmark) and this one is not among them: then the acceptance is a plain false positive.
    (Excluded, such turns would leave the User no reason not to accept everything.)"""
    return (
        settings.exclude_unlogged_positive
        and bool(settings.exclude_from)
        and turn.reply is not None
        and not turn.hit
        and turn.reply.action in POSITIVE_ACTIONS
        and (likes is None or turn.item in likes)
    )


def episode_rewards(state: EpisodeState, settings: RewardSettings = RewardSettings()) -> list[TurnReward]:
    """One TurnReward per turn of a finished episode."""
    out = []
    for turn in state.turns:
        asked = turn.reply is not None
        if settings.kind == "outcome":
            r = 2.0 * state.hit - 1.0
            out.append(TurnReward(r, r if asked else None, is_excluded(turn, settings, state.likes)))
        elif not turn.recommendation.valid:
            out.append(TurnReward(settings.invalid_reward * stage_discount(turn.number, settings.gamma), None, False))
        else:
            s = turn.reply.score
            q = turn.peers.similarity if turn.peers else 0.0
            user = user_reward(turn.hit, s, q, settings.alpha) if turn.reply.action_stated else settings.invalid_reward
            out.append(
                TurnReward(
                    rec_reward(turn.hit, s, turn.number, settings.gamma), user, is_excluded(turn, settings, state.likes)
                )
            )
    return out
