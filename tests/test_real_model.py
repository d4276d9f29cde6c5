"""Integration: the real embedded SmolLM2-135M-Instruct plays real LastFM episodes; `coars-fast eval`."""

import json

import pytest

from coars_fast.cli import main
from coars_fast.data.candidates import CandidateBuilder
from coars_fast.models import GenerationSettings, add_agent_adapters, load_model
from coars_fast.rollout import Agents, make_states, run_episodes

pytestmark = [pytest.mark.slow, pytest.mark.data]


@pytest.fixture(scope="module")
def smollm(smol_tokenizer):
    return load_model()


def test_real_model_plays_two_lastfm_users_for_two_turns(smollm, lastfm):
    model, tokenizer = smollm
    agents = Agents(add_agent_adapters(model), tokenizer, GenerationSettings(max_new_tokens=32, batch_size=2))
    episodes = lastfm.split("val")[:2]
    states = make_states(lastfm, episodes, CandidateBuilder(lastfm).build(episodes), max_turns=2)
    run_episodes(agents, states, progress=False)
    assert model.config.hidden_size == 576 and model.config.vocab_size == 49152
    for state in states:
        assert state.done and 1 <= len(state.turns) <= 2
        first = state.turns[0].rec_output
        assert first.text.strip() and tokenizer.decode(list(first.ids), skip_special_tokens=True) == first.text
        assert "Candidates:" in tokenizer.decode(list(first.prompt_ids))


def test_eval_command_end_to_end(smollm, cyclic_dataset, tmp_path, capsys):
    data = tmp_path / "cyclic"
    assert (
        main(
            [
                "eval",
                "--dataset",
                "jsonl",
                "--data-dir",
                str(data),
                "--num-users",
                "2",
                "--turns",
                "2",
                "--f1-users",
                "1",
                "--max-new-tokens",
                "24",
                "--reason-tokens",
                "3",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "agents (memory loop)" in printed and "sasrec" in printed and "user agent (1 users)" in printed
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # eval decodes grounded by default: every answer names a candidate, copied exactly
    assert summary["agents"]["episodes"] == 2 and summary["agents"]["valid_ratio"] == 1.0
    assert set(summary["baselines"]) == {"random", "popularity", "sasrec"}
    f1 = summary["user_f1"]
    assert f1["users"] == 1 and sum(f1["counts"].values()) == 20
    lines = (tmp_path / "out" / "transcripts.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["turns"]
    turns = [turn for line in lines for turn in json.loads(line)["turns"]]
    assert all(turn["matched_by"] == "exact" and turn["item"] is not None for turn in turns)
    assert all(turn["action"] in ("click", "star", "skip", "dislike") for turn in turns)
    # --reason-tokens bounds the free text after each grounded head (re-encoding may merge a token)
    _, tokenizer = smollm
    for turn in turns:
        head, _, reason = turn["rec"].partition("Reason:")
        assert len(tokenizer.encode(reason, add_special_tokens=False)) <= 3, turn["rec"]
