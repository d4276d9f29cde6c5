"""Packing: packed == padded per token, no label crosses a boundary, teacher and student aligned."""

import inspect
import random

import pytest
import torch
from helpers import count_sdpa_calls, tiny_llama

from coars_fast.rollout.collector import TurnSample
from coars_fast.rollout.packing import first_fit_decreasing, pack, padding_report
from coars_fast.train.step import decoder_and_head, response_hidden


def _fresh_seed():
    """A new seed each run, printed (pytest shows it with a failure) so the case can be replayed."""
    seed = random.randrange(10**6)
    print(f"random seed: {seed}")
    return seed


def _samples(n, vocab, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = [rng.randrange(3, vocab) for _ in range(rng.randrange(5, 40))]
        teacher = prompt[:-1] + [rng.randrange(3, vocab) for _ in range(rng.randrange(3, 12))] + prompt[-1:]
        response = [rng.randrange(3, vocab) for _ in range(rng.randrange(1, 9))]
        out.append(
            TurnSample(
                "rec" if i % 3 else "user",
                tuple(prompt),
                tuple(teacher),
                tuple(response),
                tuple(-rng.random() for _ in response),
                rng.uniform(-1, 1),
                f"g{i % 4}",
            )
        )
    return out


def test_labels_never_cross_a_sequence_boundary():
    samples = _samples(30, 500, seed=_fresh_seed())
    batches = pack(samples, token_budget=160)
    for b in batches:
        for stream in (b.student, b.teacher):
            starts = stream.cu_seqlens.tolist()
            assert stream.rows.numel() == b.targets.numel()
            for row, target in zip(stream.rows.tolist(), b.targets.tolist()):
                seq = max(i for i, s in enumerate(starts[:-1]) if s <= row)
                assert row < starts[seq + 1]  # the predicting position lies in its own sequence
                if row + 1 < starts[seq + 1]:
                    assert stream.input_ids[row + 1].item() == target  # shift by one, inside the sequence
            positions = stream.position_ids.tolist()
            assert all(positions[s] == 0 for s in starts[:-1])
        assert b.student.cu_seqlens.numel() == b.teacher.cu_seqlens.numel()
    assert sorted(t for b in batches for t in b.targets.tolist()) == sorted(t for s in samples for t in s.response_ids)


def test_first_fit_decreasing_respects_the_budget():
    sizes = [70, 10, 50, 30, 20, 200, 40, 60]
    bins = first_fit_decreasing(sizes, 100)
    assert sorted(i for b in bins for i in b) == list(range(len(sizes)))
    for b in bins:
        assert sum(sizes[i] for i in b) <= 100 or len(b) == 1
    assert [[sizes[i] for i in b] for b in bins] == [[200], [70, 30], [60, 40], [50, 20, 10]]


def test_token_weights_make_each_agent_loss_a_mean_over_turns():
    samples = _samples(17, 300, seed=3)
    batches = pack(samples, token_budget=120)
    for agent in ("rec", "user"):
        total = sum(b.token_weights.sum().item() for b in batches if b.agent == agent)
        assert total == pytest.approx(1.0)
    report = padding_report(batches, 120)
    assert 0 < report["packed_fill"] <= 1.0 and 0 <= report["padded_waste"] < 1


@pytest.mark.parametrize("packer", ["flat", "tree"])
def test_forced_tokens_get_no_weight(packer):
    """A token grounding forced has weight 0; the others keep 1 / (|y_t| * turns of the agent)."""
    from dataclasses import replace

    from coars_fast.rollout.tree_packing import pack_trees

    rng = random.Random(5)
    samples = [replace(s, forced=tuple(rng.random() < 0.4 for _ in s.response_ids)) for s in _samples(13, 300, seed=5)]
    batches = (pack if packer == "flat" else pack_trees)(samples, token_budget=150)
    turns = {a: sum(s.agent == a for s in samples) for a in ("rec", "user")}
    expected = {
        (s.agent, tuple(s.response_ids), n): 0.0 if f else 1.0 / (len(s.response_ids) * turns[s.agent])
        for s in samples
        for n, f in enumerate(s.forced)
    }
    got = [w for b in batches for w in b.token_weights.tolist()]
    assert sorted(got) == pytest.approx(sorted(expected.values()))
    assert 0 < got.count(0.0) < len(got)


def test_packed_equals_padded_per_token(smol_tokenizer):
    model = tiny_llama(smol_tokenizer, hidden=64, layers=2)
    decoder, head = decoder_and_head(model)
    samples = _samples(9, 2000, seed=_fresh_seed())
    for batch in pack(samples, token_budget=200):
        with torch.no_grad():
            for stream in (batch.student, batch.teacher):
                packed = torch.log_softmax(response_hidden(decoder, stream) @ head.T, -1)
                packed = packed.gather(1, batch.targets[:, None]).squeeze(1)
                # The same sequences right-padded into one batch with an attention mask.
                starts = stream.cu_seqlens.tolist()
                seqs = [stream.input_ids[a:b] for a, b in zip(starts[:-1], starts[1:])]
                width = max(len(s) for s in seqs)
                ids = torch.zeros(len(seqs), width, dtype=torch.long)
                mask = torch.zeros(len(seqs), width, dtype=torch.long)
                for i, s in enumerate(seqs):
                    ids[i, : len(s)], mask[i, : len(s)] = s, 1
                logits = model(input_ids=ids, attention_mask=mask).logits
                rows = stream.rows.tolist()
                seq_of = [max(i for i, s in enumerate(starts[:-1]) if s <= r) for r in rows]
                padded = torch.stack(
                    [
                        torch.log_softmax(logits[q, r - starts[q]], -1)[t]
                        for q, r, t in zip(seq_of, rows, batch.targets.tolist())
                    ]
                )
                assert (packed - padded).abs().max().item() <= 1e-5
                assert (packed <= 0).all()


def _causal_per_sequence(query, key, value, cu_seqlens, scale=None, enable_gqa=False):
    """Stand-in for torch's CUDA varlen kernel: causal sdpa sequence by sequence on [T, H, D]."""
    out = torch.empty_like(query)
    bounds = cu_seqlens.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        q, k, v = (t[a:b].transpose(0, 1) for t in (query, key, value))
        attended = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, enable_gqa=enable_gqa
        )
        out[a:b] = attended.transpose(0, 1)
    return out


def _varlen_new(
    query,
    key,
    value,
    cu_seq_q,
    cu_seq_k,
    max_q,
    max_k,
    *,
    return_aux=None,
    scale=None,
    window_size=(-1, -1),
    enable_gqa=False,
):
    assert window_size == (-1, 0) and cu_seq_q is cu_seq_k and max_q == max_k
    return _causal_per_sequence(query, key, value, cu_seq_q, scale=scale, enable_gqa=enable_gqa)


def _varlen_old(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None):
    assert is_causal and key.shape[1] == query.shape[1], "the torch 2.9 kernel has no GQA"
    return _causal_per_sequence(query, key, value, cu_seq_q)


@pytest.mark.parametrize("kernel", [_varlen_new, _varlen_old], ids=["torch>=2.11-signature", "torch-2.9-signature"])
def test_varlen_attention_plumbing_matches_sdpa_packing(smol_tokenizer, monkeypatch, kernel):
    """The CUDA varlen path (torch.nn.attention.varlen), with its kernel replaced by a per-sequence
    stand-in on CPU: cu_seqlens reach the attention, layouts, GQA and scale are right, the model's
    sdpa setting is restored, and the hidden states equal the sdpa-mask packing."""
    from coars_fast.models import packed_attention

    model = tiny_llama(smol_tokenizer, hidden=64, layers=2)
    decoder, _ = decoder_and_head(model)
    batch = pack(_samples(7, 2000, seed=_fresh_seed()), token_budget=400)[0]
    with torch.no_grad():
        with monkeypatch.context() as dense:
            dense.setattr(packed_attention, "packed_kernel", lambda device: None)
            want = response_hidden(decoder, batch.student)  # the dense block-diagonal sdpa mask
        calls = []
        recording = lambda *args, **kwargs: calls.append(1) or kernel(*args, **kwargs)
        recording.__signature__ = inspect.signature(kernel)
        monkeypatch.setattr(packed_attention, "varlen_kernel", lambda device: recording)
        got = response_hidden(decoder, batch.student)
    assert len(calls) == model.config.num_hidden_layers, "the varlen kernel must run in every layer"
    assert decoder.config._attn_implementation == "sdpa"
    assert batch.student.max_seqlen == max(torch.diff(batch.student.cu_seqlens).tolist())
    assert (got - want).abs().max().item() <= 1e-5


def test_cpu_packed_attention_runs_per_sequence(smol_tokenizer, monkeypatch):
    """On CPU a flat stream attends sequence by sequence (cost follows the real lengths), in every
    layer; hidden states and gradients equal the dense block-diagonal mask's, and autograd keeps no
    more for backward than with the dense mask (no copies of queries, keys and values)."""
    from coars_fast.models import packed_attention

    model = tiny_llama(smol_tokenizer, hidden=64, layers=2)
    decoder, _ = decoder_and_head(model)
    batch = pack(_samples(7, 2000, seed=_fresh_seed()), token_budget=400)[0]
    sequences = len(batch.student.cu_seqlens) - 1
    assert sequences > 1, "the case needs several sequences in one stream"
    weights = [p.requires_grad_(True) for n, p in model.named_parameters() if "self_attn" in n]

    def run():
        model.zero_grad(set_to_none=True)
        hidden = response_hidden(decoder, batch.student)
        hidden.square().sum().backward()
        return hidden.detach(), [p.grad.clone() for p in weights]

    calls = count_sdpa_calls(monkeypatch)
    got, got_grads = run()
    assert len(calls) == model.config.num_hidden_layers * sequences, "one sdpa per sequence in every layer"
    monkeypatch.setattr(packed_attention, "packed_kernel", lambda device: None)
    calls.clear()
    want, want_grads = run()
    assert len(calls) == model.config.num_hidden_layers  # the dense mask: one sdpa per layer
    assert (got - want).abs().max().item() <= 1e-5
    for g, w in zip(got_grads, want_grads):
        assert ((g - w).norm() / w.norm()).item() <= 1e-4  # fp32, sums in another order


def test_per_sequence_attention_keeps_no_copies_for_backward():
    """Beyond its inputs, the CPU per-sequence attention keeps only its output and softmax statistics
    for backward: no [T, H, D] copies of queries, keys and values (they cost 16% more update
    memory on the embedded model)."""
    from coars_fast.models.packed_attention import per_sequence_attention_forward

    seed = _fresh_seed()
    torch.manual_seed(seed)
    lengths, heads, kv_heads, dim = [37, 53, 60, 1], 4, 2, 16
    total = sum(lengths)
    query = torch.randn(1, heads, total, dim, requires_grad=True)
    key, value = (torch.randn(1, kv_heads, total, dim, requires_grad=True) for _ in range(2))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    inputs = {t.untyped_storage().data_ptr() for t in (query, key, value)}
    extra = {}

    def pack_hook(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in inputs:
            extra[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
        out, _ = per_sequence_attention_forward(None, query, key, value, None, scaling=dim**-0.5, cu_seq_lens_q=cu)
    assert out.shape == (1, total, heads, dim)
    output_bytes = out.numel() * out.element_size()
    stats_bytes = heads * total * 4 * 2  # logsumexp (and its padding), fp32
    print(f"seed {seed}: kept beyond the inputs {sum(extra.values())} bytes, output {output_bytes}")
    assert sum(extra.values()) <= output_bytes + stats_bytes
