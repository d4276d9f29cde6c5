"""Using trained agents: `recommend`, `chat` (a person as the User) and `export` (an adapter merged
into a standalone model), on a tiny random model."""

import builtins

import pytest
import torch

from coars_fast.cli import main
from coars_fast.env.parsing import parse_user_reply
from coars_fast.models import add_agent_adapters, save_agent_adapters
from coars_fast.use import parse_person_reply

HISTORY = ["Blur", "Pulp", "Suede"]
CANDIDATES = ["Oasis", "Muse", "Keane", "Coldplay"]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    """rec/ and user/ adapters with non-zero LoRA B (seed 0), so a merge changes the model."""
    from transformers import AutoModelForCausalLM

    model = add_agent_adapters(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    folder = tmp_path_factory.mktemp("adapters")
    save_agent_adapters(model, folder)
    return folder


def test_recommend_names_one_candidate(tiny_model_dir, adapters, capsys):
    args = ["recommend", "--model", str(tiny_model_dir), "--adapters", str(adapters), "--history", *HISTORY]
    assert main([*args, "--candidates", *CANDIDATES]) == 0
    first = capsys.readouterr().out.strip().splitlines()[0]
    assert first in CANDIDATES  # grounded: the item line is a candidate, copied exactly


def test_chat_takes_a_persons_replies_until_click(tiny_model_dir, monkeypatch, capsys):
    replies = iter(["maybe later", "skip 0.3 too slow", "click"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(replies))
    args = ["chat", "--model", str(tiny_model_dir), "--history", *HISTORY, "--candidates", *CANDIDATES]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("Recommender:") == 2 and "(conversation over)" in out
    assert out.count("start with click, star, skip or dislike") == 1  # "maybe later" was asked again


def test_chat_ends_at_the_turn_limit_and_on_end_of_input(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setattr(builtins, "input", lambda prompt="": "dislike")
    args = ["chat", "--model", str(tiny_model_dir), "--turns", "2", "--history", *HISTORY]
    assert main([*args, "--candidates", *CANDIDATES]) == 0
    assert capsys.readouterr().out.count("Recommender:") == 2

    def eof(prompt=""):
        raise EOFError

    monkeypatch.setattr(builtins, "input", eof)
    assert main([*args, "--candidates", *CANDIDATES]) == 0
    assert capsys.readouterr().out.count("Recommender:") == 1


def test_export_equals_base_plus_adapter(tiny_model_dir, adapters, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged-user"
    args = ["export", "--model", str(tiny_model_dir), "--adapters", str(adapters), "--agent", "user"]
    assert main([*args, "--out", str(out)]) == 0
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    ids = torch.randint(0, 1000, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(out)(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        plain = base(ids).logits
        expected = PeftModel.from_pretrained(base, adapters / "user")(ids).logits
    assert (expected - plain).abs().max() > 1e-3  # the adapter matters here
    assert (merged - expected).abs().max() < 1e-4
    assert main([*args, "--out", str(out)]) == 2  # never over an existing folder
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "line, action, score",
    [
        ("skip 0.3 too slow", "skip", 0.3),
        ("CLICK", "click", 1.0),
        ("star", "star", 0.75),
        ("dislike 0.1", "dislike", 0.1),
    ],
)
def test_a_persons_reply_reads_like_a_user_agents(line, action, score):
    reply = parse_user_reply("Action:" + parse_person_reply(line))
    assert reply.action == action and reply.score == pytest.approx(score)


@pytest.mark.parametrize("line", ["maybe", "skip 1.5", "", "0.5 click"])
def test_a_reply_without_an_action_or_with_a_bad_score_is_refused(line):
    assert parse_person_reply(line) is None


def test_unknown_ids_and_duplicate_candidates_are_one_line(tiny_model_dir, capsys):
    base = ["recommend", "--model", str(tiny_model_dir), "--history", *HISTORY, "--candidates"]
    assert main([*base, "Oasis", "Oasis"]) == 2
    assert "an item is listed twice" in capsys.readouterr().err
    assert main([*base, "Oasis"]) == 2
    assert "at least two different items" in capsys.readouterr().err
