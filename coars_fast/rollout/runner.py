"""The batched episode runner: many episodes at once, one batched generation per agent per turn."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

from coars_fast.data.dataset import Dataset, Episode
from coars_fast.env import DOMAINS, GENERIC, Domain, EpisodeState, PeerEvidence
from coars_fast.env.prompts import recommendation_heads, user_heads
from coars_fast.models import GenerationSettings, encode_chat, generate
from coars_fast.models.prompt_cache import PromptCache
from coars_fast.models.scoring import next_token_logprobs

# (episode state, recommended item) -> the peer evidence shown to the User agent, or None.
PeerLookup = Callable[[EpisodeState, int], PeerEvidence | None]


class Agents:
    """The Recommender and the User: one base model, the `rec` / `user` adapters when present."""

    def __init__(self, model, tokenizer, settings: GenerationSettings | None = None):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings or GenerationSettings()
        self.has_adapters = hasattr(model, "set_adapter") and hasattr(model, "peft_config")

    def _adapter(self, agent: str) -> str | None:
        return agent if self.has_adapters else None

    def respond(
        self, agent: str, chats: Sequence[list[dict]], cache: PromptCache | None = None, keys=None, choices=None
    ):
        """One answer per chat; `choices` (per chat, the allowed answer heads) ground them when the
        settings say so."""
        prompts = [encode_chat(self.tokenizer, chat) for chat in chats]
        return generate(self.model, self.tokenizer, prompts, self.settings, self._adapter(agent), cache, keys, choices)

    def next_token_logprobs(self, agent: str, chats: Sequence[list[dict]]):
        prompts = [encode_chat(self.tokenizer, chat) for chat in chats]
        return next_token_logprobs(self.model, self.tokenizer, prompts, adapter=self._adapter(agent))


def domain_of(dataset: Dataset) -> Domain:
    """The prompts' wording: the dataset's own where it has one, else the built-in one of its name."""
    known = DOMAINS.get(dataset.name, GENERIC)
    return Domain(dataset.item_noun or known.noun, dataset.user_verb or known.verb)


def make_states(
    dataset: Dataset, episodes: Sequence[Episode], candidates: Sequence[Sequence[int]], max_turns: int
) -> list[EpisodeState]:
    domain = domain_of(dataset)
    return [
        EpisodeState(
            ep.episode_id,
            [dataset.title(i) for i in ep.history],
            [(i, dataset.title(i)) for i in cands],
            ep.target,
            max_turns=max_turns,
            domain=domain,
            likes=dataset.user_likes.get(ep.user_id),
        )
        for ep, cands in zip(episodes, candidates)
    ]


def run_episodes(
    agents: Agents,
    states: Sequence[EpisodeState],
    peers: PeerLookup | None = None,
    progress: bool = True,
    desc: str = "episodes",
    wave: int = 64,
    on_wave: Callable[[Sequence[EpisodeState]], None] | None = None,
) -> None:
    """Play every episode to its end, `wave` episodes at a time (this bounds the prompt cache).

    Per turn, one batched generation per agent; episodes leave the batch as they end. Each agent's
    prompt KV is reused across the turns of an episode (only memory and question are new). With
    grounded generation the Recommender's answer names one candidate and the User's one action and
    score inside its band (coars_fast/models/grounding.py).
    """
    bar = tqdm(total=len(states), desc=desc, unit="ep", disable=not progress)
    for start in range(0, len(states), wave):
        _play(agents, states[start : start + wave], peers, bar)
        if on_wave is not None:  # e.g. keep the finished wave on disk (evaluation/played.py)
            on_wave(states[start : start + wave])
    bar.close()


def _play(agents: Agents, states: Sequence[EpisodeState], peers: PeerLookup | None, bar) -> None:
    cache = PromptCache()
    turn = 0
    while True:
        recs = [s for s in states if s.awaiting == "rec"]
        if not recs:
            break
        turn += 1
        bar.set_postfix(turn=turn, active=len(recs))
        outputs = agents.respond(
            "rec",
            [s.rec_prompt() for s in recs],
            cache,
            [(s.episode_id, "rec") for s in recs],
            [recommendation_heads(s.titles) for s in recs],
        )
        for state, output in zip(recs, outputs):
            state.give_recommendation(output)
        users = [s for s in states if s.awaiting == "user"]
        if users:
            evidence = [peers(s, s.turns[-1].item) if peers else None for s in users]
            chats = [s.user_prompt(e) for s, e in zip(users, evidence)]
            outputs = agents.respond(
                "user", chats, cache, [(s.episode_id, "user") for s in users], [user_heads()] * len(users)
            )
            for state, output, e in zip(users, outputs, evidence):
                state.give_reply(output, e)
        ended = [s for s in recs if s.done]
        cache.drop((s.episode_id, agent) for s in ended for agent in ("rec", "user"))
        bar.update(len(ended))
