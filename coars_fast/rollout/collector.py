"""The collector: sampled episodes -> per-turn rewards -> training samples with hindsight teachers.

Every agent turn becomes one TurnSample: the exact prompt and response token ids that were sampled
(never re-tokenised text), the behaviour log-probs, the turn's reward, and the token ids of the
teacher prompt (the same prompt plus the hindsight block: ground truth and a diagnosis).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from coars_fast.data.dataset import Dataset, Episode
from coars_fast.distributed import SINGLE, World, any_rank, gather
from coars_fast.env import EpisodeState
from coars_fast.env.rewards import RewardSettings, episode_rewards
from coars_fast.models import AGENTS, encode_chat
from coars_fast.rollout.runner import Agents, make_states, run_episodes

DIAGNOSES = ("template", "self")
BASELINES = ("none", "group", "turn")


@dataclass(frozen=True)
class RolloutSettings:
    group_size: int = 2  # G sampled episodes per training user
    max_turns: int = 5
    diagnosis: str = "template"  # "self": the agent writes its own diagnosis
    # "group": subtract the mean reward of the user's G episodes; "turn": for the Recommender, the mean
    # of those episodes' turns of the same number (a turn only one episode reached gets 0); for the
    # User, the mean of the step's other answers to an item as true or false as this one (none: 0).
    # "group" mixes turns whose rewards differ by the stage discount alone, so in a group that never
    # hits it still rewards late turns and punishes first ones; "turn" compares like with like.
    baseline: str = "none"
    train_agents: tuple[str, ...] = ("rec", "user")
    # Grounded answers: a token the trie forced (the only allowed continuation of a title or action, or
    # the stop after the reason) had probability 1 under the policy that sampled it, so it gets no
    # loss; its unmasked log-prob would only add noise (docs/RESULTS.md). True: train every token.
    train_forced: bool = False
    # The User is shown a wrong item far more often than the true one (about 9 times in 10 at first),
    # so "reject" dominates its loss and generalises to the true item too (docs/RESULTS.md). True:
    # the step's User answers to true and to wrong items weigh equally (each class's rewards scaled
    # by answers / (2 x that class's answers)): balanced accuracy instead of accuracy.
    balance_user: bool = False

    def __post_init__(self):
        if self.group_size < 1 or self.max_turns < 1:
            raise ValueError("group_size and max_turns must be >= 1")
        if self.diagnosis not in DIAGNOSES or self.baseline not in BASELINES:
            raise ValueError(f"diagnosis must be one of {DIAGNOSES} and baseline one of {BASELINES}")
        if not self.train_agents or not set(self.train_agents) <= set(AGENTS):
            raise ValueError(f"train_agents must be a non-empty subset of {AGENTS}, got {self.train_agents}")


@dataclass(frozen=True)
class TurnSample:
    agent: str
    prompt_ids: tuple[int, ...]
    teacher_prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    old_logprobs: tuple[float, ...]
    reward: float
    group: str  # the training user: episodes of one user form a group
    forced: tuple[bool, ...] = ()  # per response token: left out of the loss (grounding forced it); (): none


@dataclass
class Rollout:
    states: list[EpisodeState]
    samples: list[TurnSample]
    stats: dict = field(default_factory=dict)


def collect(
    agents: Agents,
    dataset: Dataset,
    episodes: Sequence[Episode],
    candidates: Sequence[Sequence[int]],
    settings: RolloutSettings,
    rewards: RewardSettings,
    peers=None,
    progress: bool = False,
    world: World = SINGLE,
) -> Rollout:
    """Play G sampled episodes per user and turn them into training samples. Under torchrun
    (`world`) the User's step-wide baseline and class balance pool every rank's answers, so that N
    ranks compute what one process with all the step's users would."""
    G = settings.group_size
    originals = {f"{ep.episode_id}#{g}": ep for ep in episodes for g in range(G)}
    copies = [replace(ep, episode_id=copy_id) for copy_id, ep in originals.items()]
    states = make_states(dataset, copies, [c for c in candidates for _ in range(G)], settings.max_turns)
    lookup = peers.lookup(originals) if peers else None
    failed = None
    try:
        run_episodes(agents, states, lookup, progress=progress, desc="rollout")
        diagnoses = _diagnoses(agents, states, settings)
    except RuntimeError as err:
        if not non_finite_sampling(err):
            raise
        failed = err
    # every rank raises here together: the pooling below is a collective
    if any_rank(failed is not None, world):
        raise failed or RuntimeError("sampling hit non-finite logits (inf or nan) on another rank")
    per_turn = [episode_rewards(s, rewards) for s in states]

    raw = []  # (agent, state, turn, reward)
    for state, turn_rewards in zip(states, per_turn):
        for turn, r in zip(state.turns, turn_rewards):
            if not rewards.leaves_out("rec", r):
                raw.append(("rec", state, turn, r.rec))
            if r.user is not None and not rewards.leaves_out("user", r):
                raw.append(("user", state, turn, r.user))
    pools = _user_pools(raw, world)
    baseline = _baselines(raw, settings.baseline, pools)
    scale = _user_balance(pools) if settings.balance_user else {}
    samples = []
    for (agent, state, turn, reward), base in zip(raw, baseline):
        if agent not in settings.train_agents:
            continue
        output = turn.rec_output if agent == "rec" else turn.user_output
        if not output.ids:
            continue
        teacher = state.teacher_prompt(turn, agent, diagnoses.get((state.episode_id, agent)))
        samples.append(
            TurnSample(
                agent=agent,
                prompt_ids=tuple(output.prompt_ids),
                teacher_prompt_ids=tuple(encode_chat(agents.tokenizer, teacher)),
                response_ids=tuple(output.ids),
                old_logprobs=tuple(output.logprobs),
                reward=(reward - base) * (scale.get(turn.hit, 1.0) if agent == "user" else 1.0),
                group=_group(state),
                forced=() if settings.train_forced else tuple(getattr(output, "forced", ())),
            )
        )
    return Rollout(states, samples, _stats(states, per_turn, raw))


def _group(state: EpisodeState) -> str:
    return state.episode_id.rsplit("#", 1)[0]


def _baseline_key(kind: str, agent: str, state: EpisodeState, turn) -> tuple:
    if kind == "turn" and agent == "user":
        # The User's state is the item it was shown: its answers to the true item and to a wrong one
        # are compared among themselves (whether the item is true is not its choice), over the whole
        # step. Mixed, a step that mostly misses would pay "reject" on the true item too; per user and
        # turn number, a true item is mostly shown once, its advantage 0, and accepting it is never
        # reinforced: the User learnt to reject everything (docs/RESULTS.md).
        return (agent, turn.hit)
    if kind == "turn":
        return (_group(state), agent, turn.number)
    return (_group(state), agent) if kind == "group" else ()


def non_finite_sampling(err: RuntimeError) -> bool:
    """torch.multinomial on a diverged model's logits (inf or nan), the one sampling error a step
    survives (it is skipped)."""
    return "inf" in str(err) and "nan" in str(err)


def _user_pools(raw, world: World) -> dict[bool, tuple[float, int]]:
    """Per class of the User's answers (to the true item, to a wrong one): the sum of their rewards
    and their count over the whole step, every rank's answers included."""
    mine = {hit: [0.0, 0] for hit in (True, False)}
    for agent, _, turn, reward in raw:
        if agent == "user":
            mine[turn.hit][0] += reward
            mine[turn.hit][1] += 1
    parts = gather(mine, world)
    return {hit: (sum(p[hit][0] for p in parts), sum(p[hit][1] for p in parts)) for hit in (True, False)}


def _baselines(raw, kind: str, pools: dict[bool, tuple[float, int]]) -> list[float]:
    """The value subtracted from each kept turn's reward (0 without a baseline). The User's turn
    baseline is the mean of the step's other answers of its class (`pools`; RLOO): with few true
    items in a step, its own reward would shrink the advantage it is measured by, to 0 when alone."""
    if kind == "none":
        return [0.0] * len(raw)
    keys = [_baseline_key(kind, agent, state, turn) for agent, state, turn, _ in raw]
    by_key = defaultdict(list)
    for key, (*_, reward) in zip(keys, raw):
        by_key[key].append(reward)
    out = []
    for key, (agent, _, turn, reward) in zip(keys, raw):
        if kind == "turn" and agent == "user":
            total, n = pools[turn.hit]
            out.append((total - reward) / (n - 1) if n > 1 else 0.0)
        else:
            out.append(statistics.fmean(by_key[key]))
    return out


def _user_balance(pools: dict[bool, tuple[float, int]]) -> dict[bool, float]:
    """Per class of the User's answers (to the true item, to a wrong one): the factor that makes the
    two classes weigh equally in the step; {} when the step has answers of one class only."""
    counts = {hit: n for hit, (_, n) in pools.items()}
    if not all(counts.values()):
        return {}
    total = sum(counts.values())
    return {hit: total / (2 * n) for hit, n in counts.items()}


def _diagnoses(agents: Agents, states: Sequence[EpisodeState], settings: RolloutSettings) -> dict:
    """(episode id, agent) -> the agent's own diagnosis text, under `--diagnosis self`."""
    if settings.diagnosis == "template":
        return {}
    written = {}
    for agent in settings.train_agents:
        outputs = agents.respond(agent, [s.diagnosis_prompt() for s in states])
        written.update({(s.episode_id, agent): o.text.strip() for s, o in zip(states, outputs)})
    return written


def _stats(states, per_turn, raw) -> dict:
    turns = [t for s in states for t in s.turns]
    rewards = {agent: [r for a, _, _, r in raw if a == agent] for agent in ("rec", "user")}
    excluded = sum(r.excluded for turn_rewards in per_turn for r in turn_rewards)
    return {
        "episodes": len(states),
        "train_hit_at_1": statistics.fmean(s.hit for s in states),
        "episodes_with_hit": statistics.fmean(any(t.hit for t in s.turns) for s in states),
        "valid_ratio": statistics.fmean(t.recommendation.valid for t in turns),
        "mean_turns": len(turns) / len(states),
        **{f"turns_{agent}": len(r) for agent, r in rewards.items()},
        # an agent with no turns this step (the User answers only valid recommendations) has no mean
        **{f"reward_{agent}": statistics.fmean(r) for agent, r in rewards.items() if r},
        **{f"reward_{agent}_std": statistics.pstdev(r) for agent, r in rewards.items() if r},
        **{f"reward_{agent}_positive": statistics.fmean(x > 0 for x in r) for agent, r in rewards.items() if r},
        "excluded_turns": excluded,
        "excluded_share": excluded / max(1, len(turns)),
        # Recommender turns that reach the loss (the rest were excluded: a wrong item the User liked)
        "rec_weighted_share": len(rewards["rec"]) / max(1, len(turns)),
    }
