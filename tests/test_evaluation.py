"""Evaluation on a tiny random model: the Hit@1 and user-agent F1 episodes share one batched play."""

import pytest

from coars_fast.data.candidates import CandidateBuilder
from coars_fast.evaluation import EvalSettings, evaluate
from coars_fast.evaluation.evaluate import sample_episodes, transcript
from coars_fast.models import GenerationSettings, add_agent_adapters, load_model
from coars_fast.rollout import Agents, make_states, run_episodes


@pytest.fixture
def agents(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir), "cpu")
    return Agents(
        add_agent_adapters(model), tokenizer, GenerationSettings(max_new_tokens=8, reason_tokens=4, batch_size=32)
    )


def test_hit_and_f1_episodes_are_played_together(agents, cyclic_dataset, monkeypatch):
    """5 Hit@1 users + 3 F1 users, 2 turns: each turn is one generation call per agent over both sets
    (not one per set), and the Hit@1 episodes come out as they do when played alone."""
    settings = EvalSettings(num_users=5, f1_users=3, max_turns=2)
    calls = []
    respond = Agents.respond

    def counting(self, agent, chats, *args, **kwargs):
        calls.append((agent, len(chats)))
        return respond(self, agent, chats, *args, **kwargs)

    monkeypatch.setattr(Agents, "respond", counting)
    result = evaluate(agents, cyclic_dataset, settings, progress=False)
    assert result["agents"]["episodes"] == 5 and result["user_f1"]["users"] == 3
    rec_calls = [n for agent, n in calls if agent == "rec"]
    assert len(rec_calls) <= settings.max_turns, f"one Recommender call per turn, got {rec_calls}"
    assert rec_calls[0] == 5 + 3, "the first turn holds every Hit@1 and F1 episode"

    # the same Hit@1 episodes played alone (as evaluation did before both sets were merged)
    monkeypatch.setattr(Agents, "respond", respond)
    episodes = sample_episodes(cyclic_dataset.split("val"), 5, 0)
    builder = CandidateBuilder(cyclic_dataset, "random", 20, 0, None)
    alone = make_states(cyclic_dataset, episodes, builder.build(episodes), 2)
    run_episodes(agents, alone, None, progress=False)
    assert result["transcripts"] == [transcript(s) for s in alone]


def test_a_killed_evaluation_continues_from_its_finished_episodes(agents, cyclic_dataset, monkeypatch, tmp_path):
    """Killed after its first wave of 3 episodes, an evaluation rerun with the same store replays those
    and plays only the rest, and its result equals an uninterrupted evaluation's; a store of another
    evaluation is set aside, and a line cut short by the kill is dropped."""
    import functools
    import importlib
    import json

    from coars_fast.evaluation.played import PlayedEpisodes

    ev = importlib.import_module("coars_fast.evaluation.evaluate")  # the module, not the function

    monkeypatch.setattr(ev, "run_episodes", functools.partial(run_episodes, wave=3))
    settings = EvalSettings(num_users=5, f1_users=3, max_turns=2)
    expected = evaluate(agents, cyclic_dataset, settings, progress=False)

    class Killed(Exception):
        pass

    store = PlayedEpisodes(tmp_path, {"run": 1})
    real_add = PlayedEpisodes.add

    def add_then_die(self, states):
        real_add(self, states)
        raise Killed

    monkeypatch.setattr(PlayedEpisodes, "add", add_then_die)
    with pytest.raises(Killed):
        evaluate(agents, cyclic_dataset, settings, progress=False, played=store)
    monkeypatch.setattr(PlayedEpisodes, "add", real_add)
    with open(store.path, "a") as f:
        f.write('{"episode_id": "cut sh')  # the kill landed mid-line
    assert len(store.load()) == 3 and store.path.read_text().endswith("\n")

    played = []  # episodes per wave of the rerun
    monkeypatch.setattr(
        PlayedEpisodes, "add", lambda self, states: played.append(len(states)) or real_add(self, states)
    )
    resumed = evaluate(agents, cyclic_dataset, settings, progress=False, played=PlayedEpisodes(tmp_path, {"run": 1}))
    assert played == [3, 2]  # the first wave's 3 episodes are replayed, the other 5 played
    for key in ("agents", "baselines", "user_f1", "transcripts"):
        assert resumed[key] == expected[key], key
    assert len(store.load()) == 8

    other = PlayedEpisodes(tmp_path, {"run": 2})  # other settings: nothing of run 1 is mixed in
    assert other.load() == {} and not other.path.exists()
    assert len(json.loads(other.path.with_name(other.path.name + ".other").read_text().split("\n")[1])["turns"]) >= 1


def test_a_continued_eval_whose_adapters_were_retrained_in_place_plays_again(tiny_model_dir, cyclic_dataset, tmp_path):
    """`coars-fast eval --out O` keeps finished episodes in O until it writes its result. Rerun with
    the same adapter folder: unchanged adapters continue those episodes; adapters saved again into the
    folder with other weights make another evaluation, so the old episodes are set aside."""
    import torch

    from coars_fast.cli import main
    from coars_fast.evaluation.played import FILE, PlayedEpisodes
    from coars_fast.models import save_agent_adapters

    model, _ = load_model(str(tiny_model_dir), "cpu")
    model = add_agent_adapters(model)

    def save(seed):  # non-zero LoRA B, so the weights differ between seeds
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(0.05 * torch.randn(param.shape, generator=generator))
        save_agent_adapters(model, tmp_path / "adapters")

    out = tmp_path / "eval"
    args = ["eval", "--dataset", "jsonl", "--data-dir", str(tmp_path / "cyclic"), "--model", str(tiny_model_dir)]
    args += ["--adapters", str(tmp_path / "adapters"), "--num-users", "2", "--f1-users", "0", "--turns", "1"]
    args += ["--max-new-tokens", "4", "--out", str(out)]
    keep = pytest.MonkeyPatch.context()
    with keep as patch:  # as if killed before the result was written: the episodes stay in `out`
        patch.setattr(PlayedEpisodes, "remove", lambda self: None)
        save(0)
        assert main(args) == 0
        assert main(args) == 0  # the same adapters: continued, nothing set aside
        assert not (out / f"{FILE}.other").exists()
        save(1)  # retrained in place
        assert main(args) == 0
    assert (out / f"{FILE}.other").exists()
