"""Prefill without padding (models/prefill.py) and the left-padded cache of transformers' generate
(prompt_cache.stack_left_padded), against plain forwards of each prompt alone on a tiny random model."""

import pytest
import torch
from helpers import tiny_llama

from coars_fast.models import GenerationSettings, generate
from coars_fast.models.prefill import prefill, run_chains

SEED = 0


@pytest.fixture(scope="module")
def model():
    return tiny_llama(vocab=300, hidden=64, layers=3, seed=SEED)


def _prompts(lengths, seed=SEED):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 300, (n,), generator=g).tolist() for n in lengths]


def _alone(model, tokens):
    """KV [Hkv, T, D] per layer and final hidden states [T, D] of one prompt, no batch, no padding."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = model.model(input_ids=torch.tensor([tokens]), cache=cache, use_cache=True)
    return [(layer.keys[0], layer.values[0]) for layer in cache.layers], out.last_hidden_state[0]


def _max_error(a, b):
    return max((x - y).abs().max().item() for pa, pb in zip(a, b) for x, y in zip(pa, pb))


def test_prefill_gives_each_prompt_the_kv_of_a_forward_of_it_alone(model):
    """Prompts of odd, different lengths, some continuing a cached prefix, one with nothing new."""
    prompts = _prompts([23, 7, 41, 2, 16])
    cached = {0: 9, 2: 30, 3: 1}  # prompt -> tokens already cached (prompt 3: only its last token is new)
    reuse = [(cached[i], _alone(model, p[: cached[i]])[0]) if i in cached else (0, None) for i, p in enumerate(prompts)]
    got = prefill(model, prompts, reuse)
    for i, prompt in enumerate(prompts):
        n, kv = got[i]
        expected, _ = _alone(model, prompt[:-1])
        assert n == len(prompt) - 1
        error = _max_error([(k[:, :n], v[:, :n]) for k, v in kv], expected)
        print(f"prompt {i} (length {len(prompt)}, cached {cached.get(i, 0)}): max |a-b| {error:.2e}")
        assert error < 1e-5


def test_chains_continue_a_parent_chain_like_the_whole_prompt(model):
    """Prompts sharing a prefix: the prefix is one chain, each suffix a chain seeing it; every
    suffix's last hidden state is that of the whole prompt's forward."""
    prefix, suffixes = _prompts([19])[0], _prompts([5, 1, 12], seed=SEED + 1)
    lone = _prompts([8], seed=SEED + 2)[0]
    chains = [(prefix, 0, None, None)] + [(s, len(prefix), None, 0) for s in suffixes] + [(lone, 0, None, None)]
    hidden, _ = run_chains(model, chains)
    ends = torch.tensor([len(c[0]) for c in chains]).cumsum(0) - 1
    for c, tokens in enumerate([prefix] + [prefix + s for s in suffixes] + [lone]):
        _, expected = _alone(model, tokens)
        error = (hidden[ends[c]] - expected[-1]).abs().max().item()
        print(f"chain {c}: max |a-b| {error:.2e}")
        assert error < 1e-5


def test_unpadded_generation_equals_each_prompt_generated_alone(model):
    """Greedy answers and their log-probs of a mixed-length batch (the CPU path: unpadded prefill,
    decode loop) equal those of transformers' generate on each prompt alone."""
    prompts = _prompts([31, 4, 17, 9])
    settings = GenerationSettings(greedy=True, max_new_tokens=9, batch_size=4)
    tok = _Tokenizer()
    batch = generate(model, tok, prompts, settings)
    for prompt, out in zip(prompts, batch):
        alone = model.generate(
            input_ids=torch.tensor([prompt]),
            max_new_tokens=9,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=[1],
            output_logits=True,
            return_dict_in_generate=True,
        )
        ids = alone.sequences[0, len(prompt) :].tolist()
        assert list(out.ids) == ids[: len(out.ids)] and len(out.ids) == len(ids)
        expected = [torch.log_softmax(s[0].float(), -1)[t].item() for s, t in zip(alone.logits, ids)]
        assert max(abs(a - b) for a, b in zip(out.logprobs, expected)) < 1e-4


class _Tokenizer:
    """What generate() asks of a tokenizer, for a model without one (ids 0: pad, 1: end)."""

    pad_token_id, eos_token_id = 0, 1

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def test_stack_left_padded_zeroes_the_pads_whatever_memory_it_is_given(model, monkeypatch):
    """Rows right-aligned at `width`, pads exactly zero (a masked NaN would still poison the
    softmax), also when the allocator hands back dirty memory: new_empty is made to return NaNs."""
    from coars_fast.models.prompt_cache import rows_of, stack_left_padded

    prompts = _prompts([9, 4, 13])
    kvs = [_alone(model, p)[0] for p in prompts]
    lengths, width = [9, 0, 13], 15
    dirty = lambda self, size, **kw: torch.full(size, float("nan"), dtype=self.dtype)  # noqa: E731
    monkeypatch.setattr(torch.Tensor, "new_empty", dirty)
    cache = stack_left_padded([kvs[0], None, kvs[2]], lengths, width, model.config)
    monkeypatch.undo()
    mask = torch.zeros(3, width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, width - n :] = 1
    for layer_index, layer in enumerate(cache.layers):
        assert layer.keys.shape[2] == width
        for row, n in enumerate(lengths):
            for got, want in zip((layer.keys, layer.values), (0, 1)):
                assert torch.equal(got[row, :, : width - n], torch.zeros_like(got[row, :, : width - n]))
                if n:
                    assert torch.equal(got[row, :, width - n :], kvs[row][layer_index][want])
    rows = rows_of(cache, mask, lengths)
    for row, n in enumerate(lengths):
        for layer_index, (keys, values) in enumerate(rows[row]):
            assert keys.shape[1] == n
            if n:
                assert torch.equal(keys, kvs[row][layer_index][0]) and torch.equal(values, kvs[row][layer_index][1])
                assert keys.data_ptr() != cache.layers[layer_index].keys.data_ptr()  # a copy, not a view
