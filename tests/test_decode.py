"""The CPU decode loop (models/decode.py) against transformers' generate (generation._generate_hf, the
path CUDA takes), on a tiny random model: the same tokens and log-probs while rows leave the batch and
forced tokens ride along; top-p sampling against an independent nucleus; the KV buffers' pads."""

from dataclasses import replace

import pytest
import torch
from helpers import tiny_llama

import coars_fast.models.generation as generation
from coars_fast.env.prompts import recommendation_heads
from coars_fast.models import GenerationSettings, encode_chat, generate
from coars_fast.models.decode import RaggedKV, _choose

SEED = 0
# titles of different token lengths sharing first tokens: forced runs of different lengths per row
TITLES = ["Queen", "Queen + Adam Lambert", "Sigur Rós", "The Velvet Underground & Nico", "Air", "Kent"]


@pytest.fixture(scope="module")
def tiny(smol_tokenizer):
    return tiny_llama(smol_tokenizer, seed=5), smol_tokenizer


def _prompts(tok, n):
    chats = [
        [
            {"role": "user", "content": "User {} liked {}. Which next?".format(i, ", ".join(TITLES[: 1 + i % 5]))},
            {"role": "assistant", "content": "Item:"},
        ]
        for i in range(n)
    ]
    return [encode_chat(tok, chat) for chat in chats]


def _transformers_path(monkeypatch):
    """Every generate() call in the block goes through transformers' generate."""
    monkeypatch.setattr(generation, "_plain_generation_config", lambda model: False)


def _record_steps(monkeypatch):
    """Per decode step, how many tokens each held row fed; and the row counts kept after a drop."""
    steps, drops = [], []
    plan, keep = RaggedKV.plan, RaggedKV.keep
    monkeypatch.setattr(RaggedKV, "plan", lambda self, counts, k: steps.append(list(counts)) or plan(self, counts, k))
    monkeypatch.setattr(RaggedKV, "keep", lambda self, rows: drops.append(len(rows)) or keep(self, rows))
    return steps, drops


def test_greedy_decode_equals_transformers_while_rows_leave_and_forced_tokens_ride_along(tiny, monkeypatch):
    """Grounded rows (a title, then a reason of at most 3 tokens) and free rows (no choices: they run
    to max_new_tokens) in one batch: the grounded ones finish early and leave, and a title's forced
    tail is fed in one step with the token that chose it."""
    model, tok = tiny
    prompts = _prompts(tok, 7)
    choices = [recommendation_heads(TITLES) if i % 3 else None for i in range(7)]
    settings = GenerationSettings(greedy=True, max_new_tokens=16, batch_size=7, reason_tokens=3)
    steps, drops = _record_steps(monkeypatch)
    ours = generate(model, tok, prompts, settings, choices=choices)
    with monkeypatch.context() as m:
        _transformers_path(m)
        theirs = generate(model, tok, prompts, settings, choices=choices)
    worst = 0.0
    for a, b in zip(ours, theirs):
        assert a.ids == b.ids and a.finished == b.finished and a.forced == b.forced and a.text == b.text
        worst = max([worst] + [abs(x - y) for x, y in zip(a.logprobs, b.logprobs)])
    print(f"steps {len(steps)}, drops {drops}, max |a-b| {worst:.2e}")
    assert worst < 1e-5
    assert any(max(c) > 1 and 1 in c for c in steps)  # a step where some rows fed a forced run, others one token
    assert drops and drops[0] < 7  # finished rows left the batch
    # one step per token without riding along: the prompt's last token, then each answer token but the last
    row_steps = sum(1 for counts in steps for fed in counts if fed)
    assert row_steps < sum(len(a.ids) for a in ours)


def test_answers_cut_inside_a_forced_run_keep_every_log_prob(tiny, monkeypatch):
    """max_new_tokens below the longest head's depth + 8 is raised to it by generate(); here a free
    row and a low cap on free rows: every answer's log-probs are complete and equal transformers'."""
    model, tok = tiny
    prompts = _prompts(tok, 4)
    choices = [recommendation_heads(TITLES), None, recommendation_heads(TITLES[3:4]), None]
    settings = GenerationSettings(greedy=True, max_new_tokens=2, batch_size=4, reason_tokens=2)
    ours = generate(model, tok, prompts, settings, choices=choices)
    with monkeypatch.context() as m:
        _transformers_path(m)
        theirs = generate(model, tok, prompts, settings, choices=choices)
    for a, b in zip(ours, theirs):
        assert a.ids == b.ids and len(a.logprobs) == len(a.ids)
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-5


def test_sampled_log_probs_are_the_models_own_and_tokens_stay_in_the_nucleus(tiny):
    """Sampling at temperature 0.8, top-p 0.5: each stored log-prob is the raw model's at that
    temperature (a plain forward of prompt + answer), and each free token lies in the nucleus of the
    tempered distribution (computed here by sorting)."""
    model, tok = tiny
    torch.manual_seed(SEED)
    prompts = _prompts(tok, 5)
    settings = GenerationSettings(greedy=False, temperature=0.8, top_p=0.5, max_new_tokens=10, batch_size=5)
    for out in generate(model, tok, prompts, settings):
        ids = torch.tensor([list(out.prompt_ids) + list(out.ids)])
        logits = model(input_ids=ids).logits[0, len(out.prompt_ids) - 1 : -1].float() / 0.8
        logprobs = torch.log_softmax(logits, -1)
        expected = logprobs.gather(1, torch.tensor(out.ids)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(out.logprobs), expected, atol=1e-4)
        for step, token in enumerate(out.ids):
            probs, order = logprobs[step].exp().sort(descending=True)
            inside = int((probs.cumsum(0) < 0.5).sum()) + 1  # the smallest top set reaching 0.5
            assert token in order[:inside].tolist()


def test_choose_draws_from_the_renormalised_nucleus():
    """_choose at top-p 0.7 over fixed logits: draw frequencies match the nucleus probabilities
    (computed by hand below), within 4 standard errors over 20,000 draws; a grounding mask wins."""
    torch.manual_seed(SEED)
    logits = torch.log(torch.tensor([[0.4, 0.25, 0.15, 0.1, 0.06, 0.04]]))
    # descending 0.4, 0.25, 0.15: cumulative 0.4, 0.65, 0.80 -> the first three reach 0.7
    expected = torch.tensor([0.4, 0.25, 0.15, 0, 0, 0]) / 0.8
    draws = _choose(logits.repeat(20000, 1), [None] * 20000, greedy=False, temperature=1.0, top_p=0.7)
    counts = torch.bincount(torch.tensor(draws), minlength=6).float() / 20000
    error = (expected * (1 - expected) / 20000).sqrt()
    print(f"frequencies {counts.tolist()}, expected {expected.tolist()}")
    assert ((counts - expected).abs() <= 4 * error + 1e-9).all()
    assert _choose(logits, [[4, 5]], greedy=True, temperature=1.0, top_p=1.0) == [4]
    assert set(_choose(logits.repeat(200, 1), [[3, 5]] * 200, greedy=False, temperature=1.0, top_p=1.0)) == {3, 5}


def test_kv_buffers_are_zero_beyond_each_row_whatever_memory_they_get(tiny, monkeypatch):
    """Rows are copied left-aligned and everything after them is exactly zero (a masked NaN would still
    poison attention), also when the allocator hands back NaNs."""
    model, _ = tiny
    g = torch.Generator().manual_seed(SEED)
    heads, dim = model.config.num_key_value_heads, model.config.hidden_size // model.config.num_attention_heads
    layers = model.config.num_hidden_layers
    kvs = [[(torch.randn(heads, n, dim, generator=g), torch.randn(heads, n, dim, generator=g)) for _ in range(layers)]
           for n in (5, 9)] + [None]  # fmt: skip
    lengths = [5, 9, 0]
    dirty = lambda self, size, **kw: torch.full(size, float("nan"), dtype=self.dtype)  # noqa: E731
    monkeypatch.setattr(torch.Tensor, "new_empty", dirty)
    kv = RaggedKV(model, kvs, lengths, 12)
    monkeypatch.undo()
    for layer, pair in enumerate(kv.layers):
        for which, buffer in enumerate(pair):
            assert buffer.shape == (3, heads, 12, dim)
            for row, n in enumerate(lengths):
                if n:
                    assert torch.equal(buffer[row, :, :n], kvs[row][layer][which])
                assert torch.equal(buffer[row, :, n:], torch.zeros_like(buffer[row, :, n:]))


def test_a_generation_config_with_processors_goes_through_transformers(tiny, monkeypatch):
    """A model whose generation config asks for a logits processor (here a repetition penalty) is not
    decoded by our loop, which does not apply them."""
    model, tok = tiny
    calls = []
    monkeypatch.setattr(generation, "decode", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 1.3)
    out = generate(model, tok, _prompts(tok, 2), replace(GenerationSettings(), max_new_tokens=3))
    assert not calls and all(len(o.ids) >= 1 for o in out)
