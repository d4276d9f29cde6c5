"""The loop learns: a tiny random model, trained by the real collector, packing, step and fused loss on
an environment whose right answer is learnable, raises its reward and beats random on held-out users.

The environment: every user's next item is the one candidate whose title starts with "Gold" (the three
others start with "Grey", "Blue" and "Rust", so the grounded first token is a 1-in-4 choice); held-out
users get catalogue items never seen in training. The rule is learnable but absent from the random
model, so the first steps sit near random (1 in 4).

`LEARNING_TEST_REWARD_SIGN=-1 pytest tests/test_learning.py` flips the sign of every reward: the run
then learns to avoid the right item and the test fails (docs/RESULTS.md records that run).
"""

import os
import random
import statistics
import time
from dataclasses import replace

import torch
from helpers import tiny_llama

from coars_fast.data.dataset import Dataset, Episode, Item
from coars_fast.env.rewards import RewardSettings
from coars_fast.models import GenerationSettings, LoraSettings, add_agent_adapters
from coars_fast.rollout import Agents, RolloutSettings, collect, make_states, pack_trees, run_episodes
from coars_fast.train.config import LossConfig
from coars_fast.train.step import accumulate_gradients, adapter_parameters, clip_and_step

SEED = 0
SIGN = int(os.environ.get("LEARNING_TEST_REWARD_SIGN", "1"))
NAMES = [
    "Harbor",
    "Meadow",
    "Copper",
    "Falcon",
    "Willow",
    "Ember",
    "Cinder",
    "Maple",
    "Raven",
    "Summit",
    "Juniper",
    "Canyon",
    "Lotus",
    "Orbit",
    "Prairie",
    "Tundra",
    "Sable",
    "Quartz",
    "Delta",
    "Aurora",
]


def gold_rule_world(seed: int):
    """Items "<kind> <name>"; train users use the first 12 names, held-out ones the rest. A user's
    history mixes the kinds; the candidates are one item of each kind, the target the Gold one."""
    rng = random.Random(seed)
    kinds = ("Gold", "Grey", "Blue", "Rust")
    items = [Item(f"{kind}-{n}", f"{kind} {n}") for n in NAMES for kind in kinds]
    index = {item.title: i for i, item in enumerate(items)}

    def users(names, count, prefix):
        episodes, candidates = [], []
        for u in range(count):
            picked = rng.sample(names, 4)
            history = tuple(index[f"{rng.choice(kinds)} {n}"] for n in rng.sample(names, 3))
            cands = [index[f"{kind} {n}"] for kind, n in zip(kinds, picked)]
            target = cands[0]
            rng.shuffle(cands)
            episodes.append(Episode(f"{prefix}{u}", None, history, target, frozenset(history) | {target}))
            candidates.append(cands)
        return episodes, candidates

    return Dataset("lastfm", items, {}), users(NAMES[:12], 64, "train-"), users(NAMES[12:], 24, "heldout-")


def held_out_hit_rate(agents, dataset, episodes, candidates) -> float:
    states = make_states(dataset, episodes, candidates, max_turns=1)
    run_episodes(agents, states, progress=False)
    return statistics.fmean(s.hit for s in states)


def train(steps: int, sign: int, seed: int = SEED):
    torch.manual_seed(seed)
    dataset, (train_eps, train_cands), heldout = gold_rule_world(seed)
    from transformers import AutoTokenizer

    from coars_fast.models.loading import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    model = add_agent_adapters(tiny_llama(tokenizer, hidden=64, layers=2, seed=seed), LoraSettings(rank=8, alpha=16))
    sampler = Agents(
        model,
        tokenizer,
        GenerationSettings(greedy=False, temperature=1.0, max_new_tokens=8, batch_size=32, reason_tokens=2),
    )
    greedy = Agents(model, tokenizer, replace(sampler.settings, greedy=True))
    groups = adapter_parameters(model, ("rec", "user"))
    optimizer = torch.optim.AdamW([p for g in groups.values() for p in g], lr=5e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    settings, rewards = RolloutSettings(group_size=4, max_turns=1), RewardSettings()
    rng = random.Random(seed)
    model.eval()
    before = held_out_hit_rate(greedy, dataset, *heldout)
    curve = []
    for _ in range(steps):
        chosen = rng.sample(range(len(train_eps)), 6)
        model.eval()
        rollout = collect(
            sampler, dataset, [train_eps[i] for i in chosen], [train_cands[i] for i in chosen], settings, rewards
        )
        samples = [replace(s, reward=sign * s.reward) for s in rollout.samples]
        model.train()
        accumulate_gradients(model, pack_trees(samples, 4096), LossConfig(), 1.0, torch.device("cpu"))
        clip_and_step(groups, optimizer, scheduler, 1.0)
        curve.append(rollout.stats["train_hit_at_1"])  # sampled episodes that hit: what the reward pays for
    model.eval()
    return before, held_out_hit_rate(greedy, dataset, *heldout), curve


def test_the_loop_learns_a_learnable_rule():
    started = time.perf_counter()
    before, after, curve = train(steps=14, sign=SIGN)
    first, last = statistics.fmean(curve[:2]), statistics.fmean(curve[-4:])
    print(
        f"seed {SEED}, reward sign {SIGN}: hit rate of the sampled episodes {first:.3f} (first 2 steps) -> "
        f"{last:.3f} (last 4); held-out Hit@1 {before:.3f} -> {after:.3f} (random 0.25); "
        f"{time.perf_counter() - started:.0f} s"
    )
    print("hit rate per step:", " ".join(f"{r:.2f}" for r in curve))
    assert last > first + 0.25, "the rewarded outcome of the last steps must clearly exceed the first steps'"
    assert after >= 0.6, "held-out Hit@1 must clearly beat random (0.25)"
