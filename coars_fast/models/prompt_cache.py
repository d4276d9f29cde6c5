"""Reuse of prompt KV across an episode's turns.

Turn t's prompt is turn t-1's prompt with the new memory line inserted before the question, so the
longest common token prefix (system prompt, history, candidates, earlier memory: most of the prompt)
need not be recomputed. Entries are keyed by (episode, agent) and must be cleared whenever the
adapters change (a new rollout). Before a key has an entry, prompts that share a long prefix (the G
sampled copies of a training user's prompt) get it computed once (prefill_shared).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch


class PromptCache:
    def __init__(self):
        # key -> (prompt token ids, per layer (keys, values) each [heads, length, head_dim])
        self._entries: dict[Hashable, tuple[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def reusable(self, key: Hashable, prompt: Sequence[int]) -> tuple[int, list | None]:
        """(n, kv): the first n tokens of `prompt` are cached (n < len(prompt): one token is always new)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0, None
        tokens, kv = entry
        return min(_common(tokens, prompt), len(prompt) - 1), kv

    def store(self, key: Hashable, prompt: Sequence[int], kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._entries[key] = (tuple(prompt), kv)

    def drop(self, keys) -> None:
        for key in keys:
            self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n, limit = 0, min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def shared_prefixes(prompts: Sequence[Sequence[int]], min_shared: int = 32) -> list[tuple[int, list[int]]]:
    """(n, members): groups of at least two prompts whose first n >= min_shared tokens are the same
    (n < each member's length: one token is always left to feed). Sorted prompts are cut where
    neighbours share fewer tokens than a threshold, the one (of the shares seen) that saves the most
    tokens: G sampled copies of a training prompt group on the whole prompt, unrelated users on the
    system prompt."""
    order = sorted(range(len(prompts)), key=lambda i: tuple(prompts[i]))
    shares = [_common(prompts[a], prompts[b]) for a, b in zip(order, order[1:])]
    best, best_saved = [], 0
    for cut in sorted({s for s in shares if s >= min_shared}):
        groups, current = [], [0]
        for k, share in enumerate(shares, start=1):
            if share < cut:
                groups.append(current)
                current = []
            current.append(k)
        groups.append(current)
        found = []
        for g in (g for g in groups if len(g) > 1):
            members = [order[k] for k in g]
            n = min(min(shares[k - 1] for k in g[1:]), *(len(prompts[i]) - 1 for i in members))
            if n >= min_shared:
                found.append((n, members))
        saved = sum(n * (len(m) - 1) for n, m in found)
        if saved > best_saved:
            best, best_saved = found, saved
    return best


@torch.no_grad()
def prefill_shared(model, prompts: Sequence[Sequence[int]], keys: Sequence[Hashable], cache: PromptCache) -> int:
    """Prompts with nothing cached under their key that share a long prefix: compute that prefix's KV
    once and store it under each of their keys, so generation starts after it. Returns the prompt
    tokens saved."""
    from transformers import DynamicCache

    fresh = [i for i, key in enumerate(keys) if key not in cache]
    saved = 0
    device = next(model.parameters()).device
    for n, members in shared_prefixes([prompts[i] for i in fresh]):
        prefix = list(prompts[fresh[members[0]]][:n])
        computed = DynamicCache(config=model.config)
        model(input_ids=torch.tensor([prefix], device=device), cache=computed, use_cache=True, logits_to_keep=1)
        kv = [(layer.keys[0], layer.values[0]) for layer in computed.layers]
        for m in members:
            cache.store(keys[fresh[m]], prefix, kv)
        saved += n * (len(members) - 1)
    return saved


def stack_left_padded(kvs: Sequence[list | None], lengths: Sequence[int], width: int, config):
    """A DynamicCache of `width` positions whose row i holds kvs[i]'s first lengths[i] positions at
    its right end (zeros to the left, masked out by the attention mask)."""
    from transformers import DynamicCache

    template = next(kv for kv in kvs if kv is not None)
    cache = DynamicCache(config=config)
    for layer, (k0, v0) in enumerate(template):
        # the masked pads are zeroed all the same: a masked NaN would still poison the softmax sum
        keys = k0.new_empty((len(kvs), k0.shape[0], width, k0.shape[2]))
        values = v0.new_empty((len(kvs), v0.shape[0], width, v0.shape[2]))
        for row, (kv, n) in enumerate(zip(kvs, lengths)):
            keys[row, :, : width - n] = 0
            values[row, :, : width - n] = 0
            if n:
                keys[row, :, width - n : width] = kv[layer][0][:, :n]
                values[row, :, width - n : width] = kv[layer][1][:, :n]
        cache.update(keys, values, layer)
    return cache


def rows_of(cache, mask: torch.Tensor, lengths: Sequence[int]) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per row, the KV of its first lengths[i] attended positions (the prompt), gaps removed."""
    rows = []
    for row, n in enumerate(lengths):
        where = mask[row].nonzero().squeeze(1)[:n].to(cache.layers[0].keys.device)
        rows.append(
            # indexing by a tensor copies: no view into the batch's cache is kept
            [(layer.keys[row][:, where], layer.values[row][:, where]) for layer in cache.layers]
        )
    return rows
