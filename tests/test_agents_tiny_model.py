"""The agents on a tiny random model: batched episodes, token-in-token-out records, two adapters."""

import time

import pytest
import torch
from helpers import tiny_llama

from coars_fast.data.dataset import Dataset, Episode, Item
from coars_fast.models import (
    GenerationSettings,
    LoraSettings,
    add_agent_adapters,
    encode_chat,
    generate,
    load_agent_adapters,
    save_agent_adapters,
)
from coars_fast.models.scoring import next_token_logprobs
from coars_fast.rollout import Agents, make_states, run_episodes


@pytest.fixture
def tiny_agents(smol_tokenizer):
    model = add_agent_adapters(tiny_llama(smol_tokenizer))
    return Agents(
        model, smol_tokenizer, GenerationSettings(greedy=False, temperature=1.0, max_new_tokens=12, batch_size=4)
    )


@pytest.fixture
def toy_dataset():
    titles = [
        "Joy Division",
        "Kent",
        "Iggy Pop",
        "Air",
        "Blur",
        "Pulp",
        "Suede",
        "Oasis",
        "Muse",
        "Keane",
        "Bush",
        "Doves",
    ]
    return Dataset(name="lastfm", items=[Item(str(i), t) for i, t in enumerate(titles)], splits={})


def _episodes(n):
    return [Episode(f"e{i}", None, (0, 1, 2), target=3 + i % 5, seen=frozenset({0, 1, 2, 3 + i % 5})) for i in range(n)]


def test_batched_episodes_keep_exact_token_ids(tiny_agents, toy_dataset):
    episodes = _episodes(6)
    candidates = [tuple(range(3, 12)) for _ in episodes]
    states = make_states(toy_dataset, episodes, candidates, max_turns=3)
    started = time.monotonic()
    run_episodes(tiny_agents, states, progress=False)
    assert time.monotonic() - started < 60
    tok = tiny_agents.tokenizer
    for s in states:
        assert s.done and 1 <= len(s.turns) <= 3
        for turn in s.turns:
            out = turn.rec_output
            assert list(out.prompt_ids) == encode_chat(tok, turn.rec_prompt)
            assert tok.decode(list(out.ids), skip_special_tokens=True) == out.text
            # grounded (the default): the answer names a candidate; the cap grows to fit the longest head
            assert turn.recommendation.matched_by == "exact" and out.text.startswith(
                f" {s.titles[turn.recommendation.position]}\nReason:"
            )
            assert 1 <= len(out.ids) <= 12 + 8 and len(out.logprobs) == len(out.ids)
            assert all(lp <= 0 for lp in out.logprobs)
            if turn.user_output is not None:
                assert list(turn.user_output.prompt_ids) == encode_chat(tok, turn.user_prompt)
                assert tok.decode(list(turn.user_output.ids), skip_special_tokens=True) == turn.user_output.text


@pytest.mark.parametrize("suppress", [False, True], ids=["plain", "config-suppressing-most-tokens"])
def test_behaviour_logprobs_match_a_forward_pass(tiny_agents, monkeypatch, suppress):
    """The stored log-probs are the model's own (what a training forward computes), one step's
    vocabulary at a time, also when the model's generation config adds a logits processor of its own
    (here one that suppresses 39,900 tokens: the samples come from the rest, the log-probs stay raw)."""
    tok, model = tiny_agents.tokenizer, tiny_agents.model
    if suppress:
        monkeypatch.setattr(model.generation_config, "suppress_tokens", list(range(100, 40000)))
    prompts = [
        encode_chat(tok, [{"role": "user", "content": text}]) for text in ("Hello there", "Name one band please")
    ]
    settings = GenerationSettings(greedy=False, temperature=0.7, max_new_tokens=8, batch_size=2)
    for out in generate(model, tok, prompts, settings, adapter="rec"):
        ids = torch.tensor([list(out.prompt_ids) + list(out.ids)])
        logits = model(input_ids=ids).logits[0, len(out.prompt_ids) - 1 : -1].float() / 0.7
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(out.ids)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(out.logprobs), expected, atol=1e-4)
        assert not suppress or all(not 100 <= t < 40000 for t in out.ids)


def test_two_adapters_differ_once_one_is_perturbed(tiny_agents, tmp_path):
    model, tok = tiny_agents.model, tiny_agents.tokenizer
    ids = torch.tensor([encode_chat(tok, [{"role": "user", "content": "Which artist next?"}])])

    def logits(adapter):
        model.set_adapter(adapter)
        return model(input_ids=ids).logits

    assert torch.equal(logits("rec"), logits("user"))  # fresh LoRA (B = 0) is the base model
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B.rec" in name:
                param.normal_(std=0.5)
    assert not torch.allclose(logits("rec"), logits("user"), atol=1e-3)
    with model.disable_adapter():
        base = model(input_ids=ids).logits
    assert torch.equal(logits("user"), base)

    # Saved in the PEFT layout, reloaded both ways.
    save_agent_adapters(model, tmp_path / "adapters")
    from peft import PeftModel

    alone = PeftModel.from_pretrained(tiny_llama(tok), tmp_path / "adapters" / "rec")
    assert torch.allclose(alone(input_ids=ids).logits, logits("rec"), atol=1e-5)
    both = load_agent_adapters(tiny_llama(tok), tmp_path / "adapters")
    both.set_adapter("rec")
    assert torch.allclose(both(input_ids=ids).logits, logits("rec"), atol=1e-5)
    both.set_adapter("user")
    assert torch.allclose(both(input_ids=ids).logits, base, atol=1e-5)


def test_shared_prefix_scoring_matches_separate_forwards(tiny_agents):
    tok, model = tiny_agents.tokenizer, tiny_agents.model
    # two users' questions (a shared prefix each, one chain computed once; the two prefixes share
    # the system prompt, one chain too) and one lone prompt
    system = "You judge music the way one listener would. Be honest, brief and selective: most of what you are shown is not for you."
    chats = [
        [
            {"role": "system", "content": system},
            {
                "role": "user",
                "content": f"You are {user}, who listened to Kent, Suede, Doves, Keane and Muse. Do you like {item}?",
            },
        ]
        for user in ("ann", "bob from the other side of town")
        for item in ("Blur", "Pulp and friends", "Air")
    ] + [[{"role": "user", "content": "Hello"}]]
    prompts = [encode_chat(tok, c) for c in chats]
    got = next_token_logprobs(model, tok, prompts, adapter="user")
    for row, prompt in enumerate(prompts):
        expected = torch.log_softmax(model(input_ids=torch.tensor([prompt])).logits[0, -1].float(), -1)
        assert torch.allclose(got[row], expected, atol=1e-4)


def test_missing_adapter_folder_is_a_clear_error(smol_tokenizer, tmp_path):
    from coars_fast.errors import ConfigError

    with pytest.raises(ConfigError, match="lacks rec/adapter_config.json, user/adapter_config.json"):
        load_agent_adapters(tiny_llama(smol_tokenizer), tmp_path)


def test_prompt_cache_reuse_gives_the_same_generation(tiny_agents):
    """Turn 2's prompt shares turn 1's prefix; reusing its KV changes nothing but the cost."""
    from coars_fast.models.prompt_cache import PromptCache

    tok, model = tiny_agents.tokenizer, tiny_agents.model
    settings = GenerationSettings(greedy=True, max_new_tokens=10, batch_size=3)

    def chat(user, memory):
        return encode_chat(
            tok,
            [
                {"role": "system", "content": "Pick an artist."},
                {"role": "user", "content": f"History of {user}: Blur, Pulp.\n\n{memory}Which one?"},
                {"role": "assistant", "content": "Item:"},
            ],
        )

    users = ["ann", "bob with a much longer name", "cy"]
    cache = PromptCache()
    first = generate(model, tok, [chat(u, "") for u in users], settings, "rec", cache, users)
    assert len(cache) == 3
    second_prompts = [chat(u, f"Turn 1: suggested something to {u}.\n\n") for u in users[:2]] + [chat("cy", "")]
    reused = [cache.reusable(u, p)[0] for u, p in zip(users, second_prompts)]
    assert all(n > 10 for n in reused) and reused[2] == len(second_prompts[2]) - 1
    cached = generate(model, tok, second_prompts, settings, "rec", cache, users)
    plain = generate(model, tok, second_prompts, settings, "rec")
    for a, b in zip(cached, plain):
        assert a.ids == b.ids and a.prompt_ids == b.prompt_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-4
    assert [g.ids for g in first] == [
        g.ids for g in generate(model, tok, [chat(u, "") for u in users], settings, "rec")
    ]


def test_lora_on_the_lm_head_is_refused_not_ignored(smol_tokenizer):
    """The fused loss reads the frozen head weight, so an adapter on the LM head would never train:
    asking for one is a clear error, and a model that has one is refused by the training step."""
    from peft import LoraConfig, get_peft_model

    from coars_fast.errors import ConfigError
    from coars_fast.train.step import decoder_and_head

    with pytest.raises(ConfigError, match="include the LM head"):
        add_agent_adapters(
            tiny_llama(smol_tokenizer, hidden=32, layers=1), LoraSettings(target_modules=("q_proj", "lm_head"))
        )
    on_head = get_peft_model(
        tiny_llama(smol_tokenizer, hidden=32, layers=1), LoraConfig(r=2, target_modules=["q_proj", "lm_head"])
    )
    with pytest.raises(ConfigError, match="LM head is not supported"):
        decoder_and_head(on_head)
    decoder, head = decoder_and_head(add_agent_adapters(tiny_llama(smol_tokenizer, hidden=32, layers=1)))
    assert head.shape == (len(smol_tokenizer), 32)


def test_wrapping_and_loading_adapters_warns_nothing(smol_tokenizer, tmp_path):
    """PEFT reads a property transformers deprecated; its FutureWarning would greet every run."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = add_agent_adapters(tiny_llama(smol_tokenizer))
        save_agent_adapters(model, tmp_path / "adapters")
        load_agent_adapters(tiny_llama(smol_tokenizer), tmp_path / "adapters")
