"""Prompt KV without padding (CPU): many prompts' uncached tokens back to back in one decoder
forward, each continuing its own cached KV.

A batch of prompts padded to its longest pays for every pad in every layer: 16% of the prefill
tokens of `coars-fast eval --num-users 10 --turns 2` on LastFM, and short prompts run as small
matrix products (a 230-token prompt alone runs at ~500 tokens/s on the 2-core CPU, a 4,000-token
stream at ~700). Here each prompt is one chain of a token stream (chain attention with a past,
packed_attention.tree_chain_attention_forward): its queries see its cached keys and its own, causally,
so the cost follows the real tokens. On CUDA the padded batch stays (one kernel per layer beats one
per prompt per layer); see generation.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from coars_fast.models.packed_attention import TREE_CHAINS, chain_masks, switched_attention

KV = list  # per layer (keys, values), each [kv heads, positions, head dim]


def decoder_of(model):
    """The transformer stack under a (PEFT-wrapped) causal LM: final hidden states, no LM head."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


@torch.no_grad()
def run_chains(
    model, chains: Sequence[tuple[Sequence[int], int, KV | None, int | None]], keep_kv: bool = False
) -> tuple[torch.Tensor, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """One decoder forward over chains (tokens, n, past, parent): a chain's tokens take positions n,
    n + 1, ... and see, in order, `past`'s first n positions (held outside the stream) or, with
    `parent` (the index of an earlier chain, whose positions end at n), that chain's keys, then
    their own causally. Returns the stream's final hidden states [T, D] and, with `keep_kv`, per
    layer its keys and values [Hkv, T, D] (chain c: its tokens' range, after those of chains 0..c-1)."""
    decoder = decoder_of(model)
    device = next(model.parameters()).device
    spans, pasts, seen, ids, positions, start = [], [], [], [], [], 0
    for tokens, n, past, parent in chains:
        if not tokens:
            raise ValueError("a prefill chain needs at least one token")
        ancestors = [] if parent is None else spans[parent][2] + [spans[parent][:2]]
        spans.append((start, start + len(tokens), ancestors))
        pasts.append(None if past is None else [(k[:, :n], v[:, :n]) for k, v in past])
        seen.append(0 if past is None else n)
        ids += tokens
        positions += range(n, n + len(tokens))
        start += len(tokens)
    kv_out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with switched_attention(decoder.config, TREE_CHAINS):
        out = decoder(
            input_ids=torch.tensor([ids], device=device),
            position_ids=torch.tensor([positions], device=device),
            use_cache=False,
            tree_chains=chain_masks(spans, device, seen),
            chain_pasts=pasts,
            kv_out=kv_out if keep_kv else None,
        )
    return out.last_hidden_state[0], kv_out


def prefill(model, prompts: Sequence[Sequence[int]], reuse: Sequence[tuple[int, KV | None]]) -> list[tuple[int, KV]]:
    """For each prompt and its reusable (n, kv) (its first n tokens cached in kv, or (0, None)):
    (len - 1, the KV of all but its last token), which `generate` continues from. A prompt with
    nothing more to compute keeps its entry."""
    todo = [i for i, (p, (n, _)) in enumerate(zip(prompts, reuse)) if len(p) - 1 > n]
    out = list(reuse)
    if not todo:
        return out
    chains = [(list(prompts[i][reuse[i][0] : -1]), reuse[i][0], reuse[i][1], None) for i in todo]
    _, kv = run_chains(model, chains, keep_kv=True)
    start = 0
    for i, (tokens, n, past, _) in zip(todo, chains):
        end = start + len(tokens)
        layers = []
        for layer in range(len(kv)):
            keys, values = kv[layer][0][:, start:end], kv[layer][1][:, start:end]
            if past is not None and n:
                keys = torch.cat([past[layer][0][:, :n], keys], dim=1)
                values = torch.cat([past[layer][1][:, :n], values], dim=1)
            layers.append((keys, values))
        out[i] = (n + len(tokens), layers)
        start = end
    return out
