"""Grounded decoding: every answer head is one of the allowed choices, the free reason is one bounded
line, and the stored log-probs stay the model's own (unmasked) ones."""

from dataclasses import replace

import pytest
import torch
from helpers import tiny_llama

from coars_fast.env.parsing import SCORE_BAND, parse_recommendation, parse_user_reply
from coars_fast.env.prompts import recommendation_heads, user_heads
from coars_fast.models import GenerationSettings, add_agent_adapters, encode_chat, generate
from coars_fast.models.grounding import TokenTrie, newline_token_ids
from coars_fast.models.prompt_cache import shared_prefixes

TITLES = ["Queen", "Queen + Adam Lambert", "Sigur Rós", "The Velvet Underground", "Air", "Muse", "Kent"]


def test_trie_walk():
    trie = TokenTrie([[1, 2, 3], [1, 2, 4], [5]])
    assert set(trie.walk([])[0]) == {1, 5}
    assert set(trie.walk([1, 2])[0]) == {3, 4}
    assert trie.walk([1, 2, 4]) == ({}, 3)  # a whole sequence: the free part starts at 3
    assert trie.walk([1, 2, 4, 9, 9]) == ({}, 3)
    assert trie.walk([1, 7])[0] is None  # left the trie (a free row)
    with pytest.raises(ValueError):
        TokenTrie([])


def test_user_heads_cover_each_band_with_one_decimal():
    for head in user_heads():
        reply = parse_user_reply("Action:" + head + " fine")
        low, high = SCORE_BAND[reply.action]
        assert reply.action_stated and reply.score_stated and low <= reply.score <= high
    assert len({parse_user_reply("Action:" + h).action for h in user_heads()}) == 4


@pytest.fixture(scope="module")
def tiny(smol_tokenizer):
    return add_agent_adapters(tiny_llama(smol_tokenizer, seed=3)), smol_tokenizer


def _prompts(tok, n, prefix):
    return [
        encode_chat(
            tok,
            [
                {"role": "user", "content": f"User {i} liked Blur and Pulp. Which next?"},
                {"role": "assistant", "content": prefix},
            ],
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("greedy", [False, True])
def test_every_answer_names_one_allowed_choice(tiny, greedy):
    model, tok = tiny
    torch.manual_seed(0)
    settings = GenerationSettings(greedy=greedy, temperature=1.3, max_new_tokens=12, batch_size=5, reason_tokens=6)
    rec = generate(model, tok, _prompts(tok, 12, "Item:"), settings, "rec", choices=[recommendation_heads(TITLES)] * 12)
    newlines = newline_token_ids(tok)
    for out in rec:
        parsed = parse_recommendation("Item:" + out.text, TITLES)
        head = recommendation_heads(TITLES)[parsed.position]
        assert parsed.matched_by == "exact" and out.text.startswith(head)
        head_len = len(tok.encode(head, add_special_tokens=False))
        free = out.ids[head_len:]
        assert len(free) <= 6 + 1  # the reason is bounded (plus the stop token)
        assert all(t not in newlines for t in free[:-2])  # one line: a break can only come last
    user = generate(model, tok, _prompts(tok, 10, "Action:"), settings, "user", choices=[user_heads()] * 10)
    assert all(any(out.text.startswith(h) for h in user_heads()) for out in user)


def test_forced_tokens_are_those_grounding_left_no_choice_for(tiny):
    """Worked out from the head strings alone: a head token is forced when every allowed head that
    agrees so far continues with it; after the head only the stop that ends a finished reason is."""
    model, tok = tiny
    torch.manual_seed(4)
    settings = GenerationSettings(greedy=False, temperature=1.5, max_new_tokens=14, batch_size=4, reason_tokens=5)
    heads = [tok.encode(h, add_special_tokens=False) for h in recommendation_heads(TITLES)]
    newlines, counts = newline_token_ids(tok), {True: 0, False: 0}
    for out in generate(
        model, tok, _prompts(tok, 16, "Item:"), settings, "rec", choices=[recommendation_heads(TITLES)] * 16
    ):
        ids = list(out.ids)
        head = next(h for h in heads if ids[: len(h)] == h)
        expected = [len({h[t] for h in heads if len(h) > t and h[:t] == ids[:t]}) == 1 for t in range(len(head))]
        free = ids[len(head) :]
        for k in range(len(free)):
            ended = k >= settings.reason_tokens or any(x in newlines for x in free[:k])
            expected.append(ended)
        assert list(out.forced) == expected, (tok.decode(ids), out.forced)
        for f in out.forced:
            counts[f] += 1
    assert counts[True] > 0 and counts[False] > 0
    free = generate(model, tok, _prompts(tok, 2, "Item:"), replace(settings, grounded=False), "rec")
    assert all(out.forced == () for out in free)


def test_free_generation_is_not_grounded(tiny):
    """The same tiny random model without grounding names no candidate: the trie is what makes it valid."""
    model, tok = tiny
    settings = GenerationSettings(greedy=True, max_new_tokens=12, batch_size=6, grounded=False)
    rec = generate(model, tok, _prompts(tok, 6, "Item:"), settings, "rec", choices=[recommendation_heads(TITLES)] * 6)
    assert sum(parse_recommendation("Item:" + out.text, TITLES).valid for out in rec) <= 1


def test_stored_logprobs_are_the_unmasked_model_ones(tiny):
    """The loss recomputes the model's own log-probs; the behaviour log-probs stored at sampling time
    must be the same quantity (not the renormalised, masked ones), or a PPO ratio would start != 1."""
    model, tok = tiny
    torch.manual_seed(1)
    settings = GenerationSettings(greedy=False, temperature=0.8, max_new_tokens=10, batch_size=3)
    prompts = _prompts(tok, 3, "Item:")
    model.set_adapter("rec")
    for out in generate(model, tok, prompts, settings, "rec", choices=[recommendation_heads(TITLES)] * 3):
        ids = torch.tensor([list(out.prompt_ids) + list(out.ids)])
        logits = model(input_ids=ids).logits[0, len(out.prompt_ids) - 1 : -1].float() / 0.8
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(out.ids)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(out.logprobs), expected, atol=1e-4)


def test_grounding_with_prompt_cache_reuse(tiny):
    """Turn 2 reuses turn 1's prompt KV: grounded greedy answers are the same with and without it."""
    from coars_fast.models.prompt_cache import PromptCache

    model, tok = tiny
    settings = GenerationSettings(greedy=True, max_new_tokens=10, batch_size=3)
    first, second = (
        _prompts(tok, 3, "Item:"),
        [p[:-6] + encode_chat(tok, [{"role": "user", "content": "x"}])[-6:] for p in _prompts(tok, 3, "Item:")],
    )
    choices = [recommendation_heads(TITLES)] * 3
    cache, keys = PromptCache(), ["a", "b", "c"]
    generate(model, tok, first, settings, "rec", cache, keys, choices)
    cached = generate(model, tok, second, settings, "rec", cache, keys, choices)
    plain = generate(model, tok, second, settings, "rec", choices=choices)
    assert [c.ids for c in cached] == [p.ids for p in plain]
    assert all(parse_recommendation("Item:" + c.text, TITLES).matched_by == "exact" for c in cached)


def test_shared_prefixes_group_copies_on_the_whole_prompt_and_strangers_on_the_system_part():
    system = list(range(100, 140))  # 40 tokens every prompt starts with, then each user's own part
    a, b, c = system + [1] * 200, system + [2] * 150, system + [3] * 10
    # two copies of a, three of b: each group shares its whole prompt (less the one token to feed),
    # which saves more than sharing the system part among all five
    groups = shared_prefixes([a, b, a, b, b])
    assert sorted((n, sorted(m)) for n, m in groups) == [(189, [1, 3, 4]), (239, [0, 2])]
    # with short own parts the system part shared by all saves more: 40 * 4 > 49 + 44
    assert sorted((n, sorted(m)) for n, m in shared_prefixes([c, c, b[:45], b[:45], a])) == [(40, [0, 1, 2, 3, 4])]
    # distinct prompts share only the system part; one prompt alone or short shares are left out
    assert [(n, sorted(m)) for n, m in shared_prefixes([a, b, c])] == [(40, [0, 1, 2])]
    assert shared_prefixes([a]) == [] and shared_prefixes([[1, 2, 3], [1, 2, 4]]) == []


def test_copies_of_a_prompt_prefilled_once_generate_as_without_the_cache(tiny):
    """The G copies of a training prompt share one prefill (prefill_shared); greedy answers are the
    same as generating each copy on its own, and fewer prompt tokens are computed."""
    from coars_fast.models.prompt_cache import PromptCache, prefill_shared

    model, tok = tiny
    settings = GenerationSettings(greedy=True, max_new_tokens=10, batch_size=4)
    prompts = [p for p in _prompts(tok, 3, "Item:") for _ in range(3)]
    keys = [f"ep{i}" for i in range(len(prompts))]
    choices = [recommendation_heads(TITLES)] * len(prompts)
    plain = generate(model, tok, prompts, settings, "rec", choices=choices)
    cached = generate(model, tok, prompts, settings, "rec", PromptCache(), keys, choices)
    assert [c.ids for c in cached] == [p.ids for p in plain]
    assert all(abs(a - b) < 1e-4 for c, p in zip(cached, plain) for a, b in zip(c.logprobs, p.logprobs))
    assert prefill_shared(model, prompts, keys, PromptCache()) == 2 * sum(len(p) - 1 for p in prompts[::3])


def _uneven_prompts(tok, n):
    chats = [[{"role": "user", "content": f"User {i} liked Blur{' and Pulp' * i}. Which next?"}] for i in range(n)]
    return [encode_chat(tok, chat + [{"role": "assistant", "content": "Item:"}]) for chat in chats]


def test_static_cache_generates_as_the_growing_cache(tiny, monkeypatch):
    """generation.static_cache (meant for CUDA, where transformers compiles the decode step): the same
    greedy answers and log-probs as the CPU decode loop (decode.py, which never calls transformers'
    generate), from calls padded to few row counts and cache
    lengths (7 prompts in calls of 4 and 3: both padded to 4 rows, 1024 positions); a prompt cache is
    left alone (each call prefills its prompts)."""
    from coars_fast.models.prompt_cache import PromptCache

    model, tok = tiny
    prompts, choices = _uneven_prompts(tok, 7), [recommendation_heads(TITLES)] * 7
    settings = GenerationSettings(greedy=True, max_new_tokens=12, batch_size=4, reason_tokens=6)
    calls, real = [], model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: calls.append(kw) or real(**kw))
    growing = generate(model, tok, prompts, settings, "rec", choices=choices)
    cache = PromptCache()
    static = generate(model, tok, prompts, replace(settings, static_cache=True), "rec", cache, list("abcdefg"), choices)
    assert [s.ids for s in static] == [g.ids for g in growing]
    assert max(abs(a - b) for s, g in zip(static, growing) for a, b in zip(s.logprobs, g.logprobs)) < 1e-5
    assert len(cache) == 0
    shapes = [(kw["input_ids"].shape[0], kw.get("cache_implementation"), kw.get("max_cache_len")) for kw in calls]
    assert shapes == [(4, "static", 1024), (4, "static", 1024)]


def test_static_cache_keeps_the_model_logprobs_when_the_decode_step_is_compiled(tiny):
    """Under torch.compile (dynamo with the eager backend here; transformers compiles only on CUDA
    unless told), the LM-head hook that records each sampled token's log-prob still fires: the stored
    log-probs equal a plain forward pass's."""
    from torch._dynamo.utils import counters
    from transformers.generation.configuration_utils import CompileConfig

    model, tok = tiny
    graphs = counters["stats"]["unique_graphs"]
    compile_config = CompileConfig(backend="eager", mode=None)
    compile_config._compile_all_devices = True  # transformers' switch to compile off CUDA
    torch.manual_seed(2)
    settings = GenerationSettings(greedy=False, temperature=0.8, max_new_tokens=8, batch_size=4, static_cache=True)
    prompts = _uneven_prompts(tok, 3)
    try:
        model.generation_config.compile_config = compile_config
        outs = generate(model, tok, prompts, settings, "rec", choices=[recommendation_heads(TITLES)] * 3)
    finally:
        model.generation_config.compile_config = None
    assert counters["stats"]["unique_graphs"] > graphs  # the decode step was compiled
    model.set_adapter("rec")
    for out in outs:
        assert parse_recommendation("Item:" + out.text, TITLES).valid
        ids = torch.tensor([list(out.prompt_ids) + list(out.ids)])
        logits = model(input_ids=ids).logits[0, len(out.prompt_ids) - 1 : -1].float() / 0.8
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(out.ids)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(out.logprobs), expected, atol=1e-4)
