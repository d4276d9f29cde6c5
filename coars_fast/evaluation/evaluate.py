"""Evaluation: the agents play greedy episodes; Hit@1, ValidRatio, turns and user-agent F1, beside the
classic baselines on the very same candidate lists."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from coars_fast.cache import atomic_write
from coars_fast.data.baselines import METHODS, hit_at_1
from coars_fast.data.candidates import CandidateBuilder
from coars_fast.data.dataset import Dataset, Episode
from coars_fast.distributed import SINGLE, World, gather, shard, sum_counts, unshard
from coars_fast.env import ACTIONS, EpisodeState
from coars_fast.errors import ConfigError
from coars_fast.evaluation.played import PlayedEpisodes, replay
from coars_fast.evaluation.user_f1 import ask_preferences, preference_cases, preference_scores
from coars_fast.rollout import make_states, run_episodes
from coars_fast.stats import hit_interval


@dataclass(frozen=True)
class EvalSettings:
    split: str = "val"
    num_users: int = 200
    f1_users: int | None = None  # users for the F1 protocol; None: as many as num_users, 0: skip
    max_turns: int = 5
    candidates: str = "random"
    num_candidates: int = 20
    seed: int = 0

    def __post_init__(self):
        if self.num_users < 1 or self.max_turns < 1 or (self.f1_users is not None and self.f1_users < 0):
            raise ConfigError("num_users and max_turns must be >= 1 and f1_users >= 0")


def sample_episodes(episodes: Sequence[Episode], n: int, seed: int) -> list[Episode]:
    """A seeded sample of n episodes, in split order (LastFM rows of one user are adjacent)."""
    if n >= len(episodes):
        return list(episodes)
    chosen = np.random.default_rng(seed).choice(len(episodes), size=n, replace=False)
    return [episodes[i] for i in sorted(chosen)]


def episode_metrics(states: Sequence[EpisodeState], users: Sequence[str | None] | None = None) -> dict:
    """Hit@1 (95% CI, clustered by user when `users` repeat), ValidRatio, turns, User actions."""
    turns = [t for s in states for t in s.turns]
    hits = sum(s.hit for s in states)
    first_hits = sum(s.turns[0].hit for s in states)
    actions = Counter(t.reply.action for t in turns if t.reply)
    users = list(users) if users is not None else [None] * len(states)
    low, high = hit_interval([s.hit for s in states], users)
    return {
        "episodes": len(states),
        "users": len(set(users)) if None not in users else len(states),
        "hit_at_1": hits / len(states),
        "ci95": [low, high],
        "hit_at_1_first_turn": first_hits / len(states),
        "valid_ratio": sum(t.recommendation.valid for t in turns) / len(turns),
        "mean_turns": len(turns) / len(states),
        "click_rate": sum(bool(s.turns[-1].reply and s.turns[-1].reply.action == "click") for s in states)
        / len(states),
        "user_actions": {a: actions.get(a, 0) for a in ACTIONS},
        "user_format_ok": sum(t.reply.action_stated and t.reply.score_stated for t in turns if t.reply)
        / max(1, sum(1 for t in turns if t.reply)),
    }


def transcript(state: EpisodeState) -> dict:
    return {
        "episode_id": state.episode_id,
        "target": state.target,
        "hit": state.hit,
        "turns": [
            {
                "rec": t.rec_output.text,
                "item": t.item,
                "matched_by": t.recommendation.matched_by,
                "user": t.user_output.text if t.user_output is not None else None,
                "action": t.reply.action if t.reply else None,
                "score": t.reply.score if t.reply else None,
            }
            for t in state.turns
        ],
    }


def evaluate(
    agents,
    dataset: Dataset,
    settings: EvalSettings,
    sasrec=None,
    peers=None,
    progress: bool = True,
    world: World = SINGLE,
    played: PlayedEpisodes | None = None,
) -> dict:
    """Everything `coars-fast eval` reports, as a JSON-ready dict (transcripts under "transcripts").

    `peers` (a PeerIndex) shows the User agent peer evidence, as in training. Under torchrun
    (`world`) each rank plays a share of the users; every rank returns the whole result. With
    `played`, episodes it holds are replayed, not played, and each finished wave is added to it."""
    started = time.monotonic()
    episodes = sample_episodes(dataset.split(settings.split), settings.num_users, settings.seed)
    builder = CandidateBuilder(dataset, settings.candidates, settings.num_candidates, settings.seed, sasrec)
    candidates = builder.build(episodes)
    states = make_states(dataset, episodes, candidates, settings.max_turns)
    n_f1 = settings.num_users if settings.f1_users is None else settings.f1_users
    cases = preference_cases(dataset, n_f1, settings.seed) if n_f1 else []
    f1_episodes = [c.episode for c in cases]
    f1_states = make_states(dataset, f1_episodes, builder.build(f1_episodes), settings.max_turns)
    # Both sets of episodes in one play: a decode step is mostly a fixed cost (reading the weights),
    # so one batch of 2n rows beats two of n (20 rows: 1.2x the time of 10 on the 2-core CPU). Each
    # rank plays its share of each set; the Hit@1 episodes are gathered, the F1 answer counts summed.
    lookup = peers.lookup({ep.episode_id: ep for ep in [*episodes, *f1_episodes]}) if peers else None
    mine, my_f1 = shard(states, world), shard(f1_states, world)
    desc = f"{dataset.name} {settings.split} episodes" + (" + user-agent F1 episodes" if cases else "")
    todo = [*mine, *my_f1]
    if played is not None:
        saved = played.load()
        for state in todo:
            if state.episode_id in saved:
                replay(state, saved[state.episode_id])
        todo = [s for s in todo if not s.done]
    run_episodes(agents, todo, lookup, progress, desc=desc, on_wave=played.add if played is not None else None)
    states = unshard(gather(mine, world), len(states)) if world.distributed else mine
    methods = [m for m in METHODS if m != "sasrec" or sasrec is not None]
    baselines = {}
    for method in methods:
        r = hit_at_1(method, dataset, episodes, candidates, sasrec=sasrec)
        baselines[method] = {"hit_at_1": r.hit_at_1, "ci95": list(r.interval)}
    result = {
        "dataset": dataset.name,
        "settings": asdict(settings),
        "agents": episode_metrics(states, [ep.user_id for ep in episodes]),
        "baselines": baselines,
        "user_f1": None,
        "seconds": {"episodes": time.monotonic() - started},  # both plays (Hit@1 and F1 episodes)
        "transcripts": [transcript(s) for s in states],
    }
    if cases:
        f1_started = time.monotonic()
        counts = ask_preferences(agents, dataset, shard(cases, world), my_f1)["counts"]
        result["user_f1"] = preference_scores(sum_counts(counts, world), len(cases))
        result["seconds"]["user_f1"] = time.monotonic() - f1_started  # the like/dislike questions
    result["seconds"]["total"] = time.monotonic() - started
    return result


def format_report(result: dict, title: str = "") -> str:
    a, s = result["agents"], result["settings"]
    lines = [
        title or f"{result['dataset']} {s['split']}",
        f"{a['episodes']} episodes of {a.get('users', a['episodes'])} users"
        + (" (95% CI clustered by user)" if a.get("users", a["episodes"]) < a["episodes"] else "")
        + f", {s['num_candidates']} {s['candidates']} candidates, at most {s['max_turns']} turns, seed {s['seed']}",
        "",
        f"{'method':<28} {'Hit@1':>6}  {'95% CI':<16} {'ValidRatio':>10} {'turns':>6}",
    ]
    for method, b in result["baselines"].items():
        ci = "exact" if method == "random" else f"[{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}]"
        lines.append(f"{method:<28} {b['hit_at_1']:>6.3f}  {ci:<16} {'-':>10} {'-':>6}")
    ci = f"[{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]"
    lines.append(
        f"{'agents (memory loop)':<28} {a['hit_at_1']:>6.3f}  {ci:<16} {a['valid_ratio']:>10.3f} {a['mean_turns']:>6.2f}"
    )
    lines.append(f"{'  first turn only':<28} {a['hit_at_1_first_turn']:>6.3f}")
    f1 = result.get("user_f1")
    if f1:
        lines.append(
            f"user agent ({f1['users']} users): precision {f1['precision']:.3f}  recall {f1['recall']:.3f}  F1 {f1['f1']:.3f}"
        )
    else:
        lines.append("user agent: F1 not measured (no users with 13+ items in this dataset, or --f1-users 0)")
    secs = result["seconds"]
    lines.append(
        f"wall time {secs['total']:.0f} s (episodes {secs['episodes']:.0f} s"
        + (f", F1 questions {secs['user_f1']:.0f} s)" if "user_f1" in secs else ")")
    )
    return "\n".join(lines)


def write_result(result: dict, folder: Path) -> Path:
    """summary.json (metrics) and transcripts.jsonl (every turn's text), written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in result.items() if k != "transcripts"}
    atomic_write(folder / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    lines = "".join(json.dumps(t) + "\n" for t in result["transcripts"])
    atomic_write(folder / "transcripts.jsonl", lambda tmp: tmp.write_text(lines))
    return folder / "summary.json"
