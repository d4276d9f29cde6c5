"""The collector with scripted agents: rewards per turn, exclusion, group baseline, teacher prompts."""

from dataclasses import dataclass

import pytest

from coars_fast.data.dataset import Dataset, Episode, Item
from coars_fast.env.rewards import RewardSettings
from coars_fast.models import encode_chat
from coars_fast.rollout import RolloutSettings, collect


@dataclass
class Out:
    prompt_ids: tuple
    ids: tuple
    logprobs: tuple
    text: str


class ScriptedAgents:
    """Answers from a script keyed by agent; token ids are the real tokenizer's."""

    def __init__(self, tokenizer, rec, user, diagnosis="the user wanted something else"):
        self.tokenizer, self.script = tokenizer, {"rec": rec, "user": user}
        self.diagnosis, self.calls = diagnosis, []

    def respond(self, agent, chats, cache=None, keys=None, choices=None):
        outs = []
        for chat in chats:
            is_diagnosis = chat[-1]["role"] == "user" and chat[-1]["content"].endswith("Diagnosis:")
            text = self.diagnosis if is_diagnosis else self.script[agent](chat)
            ids = tuple(self.tokenizer.encode(text, add_special_tokens=False)) + (self.tokenizer.eos_token_id,)
            outs.append(Out(tuple(encode_chat(self.tokenizer, chat)), ids, (-0.5,) * len(ids), text))
        self.calls.append(agent)
        return outs


@pytest.fixture
def toy():
    titles = ["Blur", "Pulp", "Suede", "Oasis", "Muse", "Keane"]
    ds = Dataset("lastfm", [Item(str(i), t) for i, t in enumerate(titles)], {})
    episodes = [
        Episode("e1", None, (0, 1), 2, frozenset({0, 1, 2})),
        Episode("e2", None, (0, 3), 4, frozenset({0, 3, 4})),
    ]
    return ds, episodes, [(2, 5, 4, 3), (4, 5, 2, 1)]


def test_collect_rewards_samples_and_teacher_prompts(smol_tokenizer, toy):
    ds, episodes, cands = toy
    # Keane is a candidate of both users and the target of neither; the User dislikes it with score 0.1
    agents = ScriptedAgents(
        smol_tokenizer, rec=lambda chat: " Keane\nReason: fits", user=lambda chat: " dislike\nScore: 0.1\nReason: no"
    )
    settings = RolloutSettings(group_size=2, max_turns=2)
    rollout = collect(agents, ds, episodes, cands, settings, RewardSettings())
    assert len(rollout.states) == 4 and all(len(s.turns) == 2 for s in rollout.states)
    assert all(t.reply.action == "dislike" and t.reply.score == 0.1 for s in rollout.states for t in s.turns)
    # Eq. 7 and 8 by hand, miss (2 hit - 1 = -1), s = 0.1, no peers (q = 0), gamma 0.9:
    # rec  -(0.5 + 0.05) = -0.55 at turn 1, -0.55 * 0.9 = -0.495 at turn 2; user -(2 * 0.1 - 1) = 0.8
    # samples come per episode, per turn, Recommender then User
    assert [x.agent for x in rollout.samples] == ["rec", "user"] * 8
    assert [x.reward for x in rollout.samples] == pytest.approx([-0.55, 0.8, -0.495, 0.8] * 4)
    for k, sample in enumerate(rollout.samples):
        state = rollout.states[k // 4]
        teacher = smol_tokenizer.decode(list(sample.teacher_prompt_ids))
        student = smol_tokenizer.decode(list(sample.prompt_ids))
        # the teacher's prompt is the student's with the hindsight block before the conversation (the
        # question at turn 1; the suggestion for the User at turn 1), no other change
        first = "Conversation so far:" if "Conversation so far:" in student else None
        first = first or ("Which candidate" if sample.agent == "rec" else "The recommender now suggests")
        assert teacher == student.replace(first, f"{state.hindsight()}\n\n{first}", 1)
        assert '"Suede"' in state.hindsight() if sample.group == "e1" else '"Muse"' in state.hindsight()
        assert student.endswith("Item:" if sample.agent == "rec" else "Action:")
        assert sample.response_ids[-1] == smol_tokenizer.eos_token_id
        assert len(sample.old_logprobs) == len(sample.response_ids)
    assert rollout.stats["train_hit_at_1"] == 0.0 and rollout.stats["valid_ratio"] == 1.0
    assert rollout.stats["turns_user"] == 8 and rollout.stats["reward_user"] == pytest.approx(0.8)
    assert rollout.stats["reward_rec"] == pytest.approx((-0.55 - 0.495) / 2)


def test_no_user_turns_means_no_user_reward_mean(smol_tokenizer, toy):
    ds, episodes, cands = toy
    agents = ScriptedAgents(smol_tokenizer, rec=lambda chat: " Coldplay", user=lambda chat: " click")
    rollout = collect(agents, ds, episodes, cands, RolloutSettings(group_size=1, max_turns=2), RewardSettings())
    assert rollout.stats["valid_ratio"] == 0.0 and rollout.stats["turns_user"] == 0
    assert "reward_user" not in rollout.stats and "user" not in agents.calls  # not a fake 0.0


def test_exclusion_ablation_agents_and_group_baseline(smol_tokenizer, toy):
    ds, episodes, cands = toy
    clicks = ScriptedAgents(smol_tokenizer, rec=lambda chat: " Keane", user=lambda chat: " click\nScore: 0.9")
    rollout = collect(clicks, ds, episodes, cands, RolloutSettings(group_size=1, max_turns=3), RewardSettings())
    assert rollout.samples == [] and rollout.stats["excluded_turns"] == 2  # wrong item, accepted: not logged
    # left out of the Recommender's loss only: the User pays Eq. 8 for the false positive, by hand
    # (2 hit - 1)(2 s - 1) = -(1.8 - 1) = -0.8, no peers
    user_pays = collect(
        clicks, ds, episodes, cands, RolloutSettings(group_size=1, max_turns=3), RewardSettings(exclude_from=("rec",))
    )
    assert [(s.agent, s.group) for s in user_pays.samples] == [("user", "e1"), ("user", "e2")]
    assert [s.reward for s in user_pays.samples] == pytest.approx([-0.8, -0.8])
    assert user_pays.stats["excluded_turns"] == 2 and user_pays.stats["turns_rec"] == 0
    with pytest.raises(ValueError, match="exclude_from"):
        RewardSettings(exclude_from=("critic",))

    agents = ScriptedAgents(smol_tokenizer, rec=lambda chat: " Keane", user=lambda chat: " skip\nScore: 0.3")
    only_rec = collect(
        agents, ds, episodes, cands, RolloutSettings(group_size=2, max_turns=2, train_agents=("rec",)), RewardSettings()
    )
    assert {s.agent for s in only_rec.samples} == {"rec"} and "user" in agents.calls  # the user still plays

    grouped = collect(
        agents, ds, episodes, cands, RolloutSettings(group_size=2, max_turns=2, baseline="group"), RewardSettings()
    )
    for group in ("e1", "e2"):
        for agent in ("rec", "user"):
            rewards = [s.reward for s in grouped.samples if s.group == group and s.agent == agent]
            assert len(rewards) == 4 and sum(rewards) == pytest.approx(0.0)


def test_self_diagnosis_goes_into_the_teacher_prompt(smol_tokenizer, toy):
    ds, episodes, cands = toy
    agents = ScriptedAgents(
        smol_tokenizer,
        rec=lambda chat: " Keane",
        user=lambda chat: " skip",
        diagnosis="Keane was a poor guess; Suede fits the britpop history.",
    )
    rollout = collect(
        agents,
        ds,
        episodes[:1],
        cands[:1],
        RolloutSettings(group_size=1, max_turns=1, diagnosis="self"),
        RewardSettings(),
    )
    teacher = smol_tokenizer.decode(list(rollout.samples[0].teacher_prompt_ids))
    assert "Keane was a poor guess; Suede fits the britpop history." in teacher and '"Suede"' in teacher


def _suede_or_keane(tokenizer) -> ScriptedAgents:
    """The Recommender alternates Suede (e1's target) and Keane; the User clicks Suede, skips Keane."""
    calls = iter(range(100))
    return ScriptedAgents(
        tokenizer,
        rec=lambda chat: " Suede" if next(calls) % 2 == 0 else " Keane",
        user=lambda chat: " click\nScore: 0.9" if '"Suede"' in chat[1]["content"] else " skip\nScore: 0.3",
    )


def test_turn_baseline_compares_turns_of_the_same_number(smol_tokenizer, toy):
    ds, episodes, cands = toy
    agents = _suede_or_keane(smol_tokenizer)
    settings = RolloutSettings(group_size=2, max_turns=2, baseline="turn")
    rollout = collect(agents, ds, episodes[:1], cands[:1], settings, RewardSettings())
    assert [[t.hit for t in s.turns] for s in rollout.states] == [[True], [False, True]]
    # by hand: episode 1 hits at turn 1 (rec 1.0 * 0.95, user 0.8); episode 2 misses at turn 1 (rec
    # -0.65, user -(0.6 - 1) = 0.4), then hits (rec 0.95 * 0.9, user 0.8). Turn 1 mean: rec 0.15;
    # turn 2 was reached by episode 2 alone: its own reward, advantage 0. The User's answers are
    # compared with the step's other answers to an item as true as their own: the two true-item
    # answers with each other (0.8 - 0.8), the one wrong-item answer with none (its reward, 0.4).
    assert [x.agent for x in rollout.samples] == ["rec", "user", "rec", "user", "rec", "user"]
    assert [x.reward for x in rollout.samples] == pytest.approx([0.8, 0.0, -0.8, 0.4, 0.0, 0.0])


def test_balance_user_weighs_true_and_wrong_item_answers_equally(smol_tokenizer, toy):
    ds, episodes, cands = toy
    agents = _suede_or_keane(smol_tokenizer)
    settings = RolloutSettings(group_size=2, max_turns=2, balance_user=True)
    rollout = collect(agents, ds, episodes[:1], cands[:1], settings, RewardSettings())
    assert [[t.hit for t in s.turns] for s in rollout.states] == [[True], [False, True]]
    # User rewards 0.8 (true), 0.4 (wrong), 0.8 (true): 3 answers, 2 true (x 3/4), 1 wrong (x 3/2);
    # the Recommender's are untouched (Eq. 7, no baseline)
    assert [x.reward for x in rollout.samples if x.agent == "user"] == pytest.approx([0.6, 0.6, 0.6])
    assert [x.reward for x in rollout.samples if x.agent == "rec"] == pytest.approx([0.95, -0.65, 0.855])


def test_turn_baseline_pools_the_users_answers_over_the_step(smol_tokenizer, toy):
    """The User's true-item answers are few (a true item is mostly shown once per user and turn): its
    turn baseline is the mean of the step's other answers to items as true as its own, across users
    and turn numbers, so that accepting a true item is reinforced (docs/RESULTS.md: without it the
    User learnt to reject everything)."""
    ds, episodes, cands = toy
    # states in order e1#0, e1#1, e2#0, e2#1; turn 1: Suede (e1's target), Keane, Muse (e2's), Keane;
    # turn 2 (the two that missed): Suede (hit), Pulp (miss)
    picks = iter([" Suede", " Keane", " Muse", " Keane", " Suede", " Pulp"])
    suggestion = lambda chat: chat[1]["content"].rsplit("The recommender now suggests", 1)[-1]  # noqa: E731
    replies = {"Suede": " click\nScore: 0.9", "Muse": " click\nScore: 0.8", "Keane": " skip\nScore: 0.3"}
    agents = ScriptedAgents(
        smol_tokenizer,
        rec=lambda chat: next(picks),
        user=lambda chat: next((r for t, r in replies.items() if f'"{t}"' in suggestion(chat)), " dislike\nScore: 0.1"),
    )
    settings = RolloutSettings(group_size=2, max_turns=2, baseline="turn")
    rollout = collect(agents, ds, episodes, cands, settings, RewardSettings())
    assert [[(t.item, t.hit) for t in s.turns] for s in rollout.states] == [
        [(2, True)],
        [(5, False), (2, True)],
        [(4, True)],
        [(5, False), (1, False)],
    ]
    # User rewards by hand (Eq. 8, q = 0): true item accepted with s: 2s - 1 (Suede 0.8, Muse 0.6);
    # wrong item refused with s: 1 - 2s (Keane 0.4, Pulp 0.8). True pool {0.8, 0.8, 0.6}, wrong pool
    # {0.4, 0.4, 0.8}; each answer minus the mean of the other two.
    user = [x.reward for x in rollout.samples if x.agent == "user"]
    assert user == pytest.approx([0.8 - 0.7, 0.4 - 0.6, 0.8 - 0.7, 0.6 - 0.8, 0.4 - 0.6, 0.8 - 0.4])
    # Recommender, per user and turn number: e1 turn 1 {0.95, -0.65}, e2 turn 1 {0.9, -0.65}; the
    # second turns are alone (advantage 0)
    rec = [x.reward for x in rollout.samples if x.agent == "rec"]
    assert rec == pytest.approx([0.8, -0.8, 0.0, 0.775, -0.775, 0.0])


def test_known_likes_reach_the_rewards_through_the_collector(smol_tokenizer, toy):
    """A dataset that knows its users' likes (synthetic): an accepted wrong item outside them is paid
    for (Eq. 7/8 by hand), an accepted liked one is still left out; without likes both are left out."""
    ds, _, _ = toy
    episodes = [Episode("e1", "u1", (0, 1), 2, frozenset({0, 1, 2}))]
    calls = iter(range(100))
    agents = ScriptedAgents(
        smol_tokenizer,
        rec=lambda chat: " Keane" if next(calls) % 2 == 0 else " Oasis",  # Keane: not liked; Oasis: liked
        user=lambda chat: " star\nScore: 0.7",
    )
    settings = RolloutSettings(group_size=1, max_turns=2)
    ds.user_likes = {"u1": frozenset({2, 3})}
    rollout = collect(agents, ds, episodes, [(2, 5, 3)], settings, RewardSettings())
    assert [t.item for t in rollout.states[0].turns] == [5, 3]
    assert [(s.agent, s.reward) for s in rollout.samples] == [
        ("rec", pytest.approx(-(0.5 + 0.35))),
        ("user", pytest.approx(-(1.4 - 1))),
    ]
    ds.user_likes = {}
    assert collect(agents, ds, episodes, [(2, 5, 3)], settings, RewardSettings()).samples == []


def test_the_users_step_pools_span_every_rank(monkeypatch):
    """Under torchrun each rank plays its own users; the User's turn baseline and class balance must
    still pool the whole step's answers: rank 0's advantages equal one process's over both ranks'."""
    import random
    from types import SimpleNamespace

    from coars_fast.distributed import SINGLE, World
    from coars_fast.rollout import collector

    rng = random.Random(7)
    print("seed 7")

    def answers(user: str) -> list:
        state = SimpleNamespace(episode_id=f"{user}#0")
        turns = [SimpleNamespace(hit=rng.random() < 0.3, number=1 + i % 3) for i in range(6)]
        return [(agent, state, t, rng.uniform(-1, 1)) for t in turns for agent in ("rec", "user")]

    rank0, rank1 = answers("a"), answers("b")
    single_pools = collector._user_pools(rank0 + rank1, SINGLE)
    expected = collector._baselines(rank0 + rank1, "turn", single_pools)[: len(rank0)]
    # rank 0 of 2: `gather` hands it both ranks' partial pools, as torch.distributed would
    parts = [collector._user_pools(rank0, SINGLE), collector._user_pools(rank1, SINGLE)]
    assert parts[0] != single_pools  # rank 0's answers alone would give other pools
    monkeypatch.setattr(collector, "gather", lambda obj, world: [{h: list(v) for h, v in p.items()} for p in parts])
    pools = collector._user_pools(rank0, World(0, 2, 0))
    assert pools == single_pools
    assert collector._baselines(rank0, "turn", pools) == pytest.approx(expected)
    assert collector._user_balance(pools) == collector._user_balance(single_pools) != {}
