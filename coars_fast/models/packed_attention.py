"""Attention over a packed stream (sequences back to back, position ids restarting at each): every
sequence attends only to itself.

- flash-attn installed (CUDA): the model is loaded with "flash_attention_2", which reads the sequence
  boundaries from the restarting position ids and runs varlen kernels.
- CUDA without flash-attn: the model is loaded with "sdpa" (generation needs its padding masks), and
  the training forwards switch to torch's own varlen flash attention (`torch.nn.attention.varlen`,
  torch >= 2.9), given the stream's cu_seqlens. Its cost follows the real sequence lengths.
- CPU: the same switch, to `per_sequence_attention_forward`: causal sdpa sequence by sequence, so
  the cost also follows the real lengths (7x less attention time than a dense mask over an
  8-sequence, 2,600-token stream on the 2-core CPU, forward + backward).
- Otherwise (CUDA with neither) sdpa: transformers turns the restarting position ids into a
  block-diagonal mask over the whole stream. Correct, but dense: attention costs O(stream length^2).

A token tree (shared-prefix packing, coars_fast/rollout/tree_packing.py) attends along its branches:
`tree_attention` runs, on CUDA, flex attention with a block mask of the tree rule (its cost follows the
visible blocks only); on CPU, `tree_chain_attention_forward`: sdpa chain by chain, each chain's
queries against its ancestors' keys and its own, causally (half the attention time of the tree's
dense mask on the bench case's streams, forward + backward); elsewhere sdpa with the dense mask.
The same chain attention, with keys held outside the stream before a chain's own, prefills prompts
without padding for generation and scores prompts that share prefixes (prefill.py).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect

import torch

VARLEN = "coars_varlen"  # our names in transformers' AttentionInterface
PER_SEQUENCE = "coars_per_sequence"
TREE_CHAINS = "coars_tree_chains"


def varlen_kernel(device: torch.device):
    """torch's varlen flash-attention function when it can run on `device`, else None."""
    if device.type != "cuda":
        return None
    try:
        return importlib.import_module("torch.nn.attention.varlen").varlen_attn
    except (ImportError, AttributeError):
        return None


@functools.cache
def _parameters(kernel) -> frozenset:
    return frozenset(inspect.signature(kernel).parameters)


def _call_varlen(kernel, query, key, value, cu_seqlens, max_len, scale):
    """Causal varlen attention on [T, H, D] tensors, across the two signatures torch has shipped
    (2.9-2.10: is_causal, no scale, no GQA; later: window_size, scale, enable_gqa)."""
    params = _parameters(kernel)  # looked up once per kernel, not in every layer of every forward
    kwargs = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    if "enable_gqa" in params:
        kwargs["enable_gqa"] = key.shape[1] != query.shape[1]
    elif key.shape[1] != query.shape[1]:
        repeat = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
    default_scale = query.shape[-1] ** -0.5
    if "scale" in params:
        kwargs["scale"] = scale
    elif scale is not None and abs(scale - default_scale) > 1e-12 * default_scale:
        query = query * (scale / default_scale)
    return kernel(query, key, value, cu_seqlens, cu_seqlens, max_len, max_len, **kwargs)


def varlen_attention_forward(
    module,
    query,
    key,
    value,
    attention_mask,
    scaling=None,
    dropout=0.0,
    cu_seq_lens_q=None,
    max_length_q=None,
    **kwargs,
):
    """transformers attention function: query [1, Hq, T, D], key/value [1, Hkv, T, D] of one packed
    stream -> ([1, T, Hq, D], None)."""
    if cu_seq_lens_q is None or query.shape[0] != 1:
        raise ValueError(f"{VARLEN} attention needs one packed stream and its cu_seq_lens_q")
    as_tokens = lambda t: t[0].transpose(0, 1).contiguous()  # [T, H, D]
    out = _call_varlen(
        varlen_kernel(query.device),
        as_tokens(query),
        as_tokens(key),
        as_tokens(value),
        cu_seq_lens_q,
        max_length_q,
        scaling,
    )
    return out[None], None


def per_sequence_attention_forward(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, cu_seq_lens_q=None, **kwargs
):
    """transformers attention function (CPU): causal sdpa over each sequence of one packed stream,
    query [1, Hq, T, D], key/value [1, Hkv, T, D] -> ([1, T, Hq, D], None). Slices of the inputs, no
    copies: autograd keeps what one sdpa over the whole stream would keep."""
    if cu_seq_lens_q is None or query.shape[0] != 1:
        raise ValueError(f"{PER_SEQUENCE} attention needs one packed stream and its cu_seq_lens_q")
    bounds = cu_seq_lens_q.tolist()
    gqa = key.shape[1] != query.shape[1]
    parts = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling, enable_gqa=gqa
        )
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(parts, dim=2).transpose(1, 2), None


def packed_kernel(device: torch.device) -> str | None:
    """The attention a packed stream gets on `device`: VARLEN (torch's varlen flash kernel, CUDA),
    PER_SEQUENCE (CPU), or None (sdpa's dense block-diagonal mask)."""
    if varlen_kernel(device) is not None:
        return VARLEN
    return PER_SEQUENCE if device.type == "cpu" else None


@functools.cache
def _register():
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN, varlen_attention_forward)
    AttentionInterface.register(PER_SEQUENCE, per_sequence_attention_forward)
    AttentionInterface.register(TREE_CHAINS, tree_chain_attention_forward)


@contextlib.contextmanager
def switched_attention(config, name: str):
    """The block runs with attention implementation `name`; the previous one is restored after."""
    _register()
    previous, config._attn_implementation = config._attn_implementation, name
    try:
        yield
    finally:
        config._attn_implementation = previous


@contextlib.contextmanager
def packed_attention(decoder, cu_seqlens: torch.Tensor, max_len: int):
    """Runs the block with the attention suited to a packed stream; yields the extra forward kwargs.

    Switches an sdpa model to `packed_kernel`'s attention (no mask is built for a name
    transformers' mask interface does not know), and back afterwards."""
    config = decoder.config
    kernel = packed_kernel(next(decoder.parameters()).device)
    if config._attn_implementation != "sdpa" or kernel is None:
        yield {}
        return
    with switched_attention(config, kernel):
        yield dict(cu_seq_lens_q=cu_seqlens, cu_seq_lens_k=cu_seqlens, max_length_q=max_len, max_length_k=max_len)


def tree_mask(subtree_end: torch.Tensor) -> torch.Tensor:
    """[1, 1, T, T] bool, True where query i may attend to key j: j is i or an ancestor of i (nodes
    in pre-order: j's subtree is [j, subtree_end[j]))."""
    nodes = torch.arange(subtree_end.numel(), device=subtree_end.device)
    query, key = nodes[:, None], nodes[None, :]
    return ((key <= query) & (query < subtree_end[None, :]))[None, None]


def tree_chains(subtree_end: torch.Tensor) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """The tree cut into chains: (a, b, ancestors) per maximal run [a, b) of nodes each the child of
    the node before it, with `ancestors` the ranges of nodes above a (root first). Every node of the
    chain sees exactly those ranges and the chain's nodes up to itself."""
    ends = subtree_end.tolist()
    starts = [0] + [i for i in range(1, len(ends)) if ends[i - 1] <= i]  # i is not inside i-1's subtree
    bounds = list(zip(starts, starts[1:] + [len(ends)]))
    chains = []
    for k, (a, b) in enumerate(bounds):
        parent = a - 1  # the deepest ancestor of a: the last earlier node whose subtree holds a
        while parent >= 0 and ends[parent] <= a:
            parent -= 1
        ancestors = []
        if parent >= 0:
            above = chains[next(c for c in reversed(range(k)) if bounds[c][0] <= parent)]
            ancestors = above[2] + [(above[0], parent + 1)]
        chains.append((a, b, ancestors))
    return chains


def tree_chain_attention_forward(
    module,
    query,
    key,
    value,
    attention_mask,
    scaling=None,
    dropout=0.0,
    tree_chains=None,
    chain_pasts=None,
    kv_out=None,
    **kwargs,
):
    """transformers attention function (CPU): attention along a token tree, chain by chain (see
    `tree_chains`; `tree_chains` here also carries each chain's mask). query [1, Hq, T, D], key/value
    [1, Hkv, T, D] -> ([1, T, Hq, D], None). Only the ancestors' keys and values are copied.

    For prefill (coars_fast/models/prefill.py): `chain_pasts`, per chain None or the KV it continues,
    held outside the stream (per layer a pair [Hkv, n, D], seen before the ancestors; `chain_masks`
    counts its n keys); `kv_out`, a dict given each layer's stream keys and values [Hkv, T, D]."""
    if tree_chains is None or query.shape[0] != 1:
        raise ValueError(f"{TREE_CHAINS} attention needs one token tree and its chains")
    if kv_out is not None:
        kv_out[module.layer_idx] = (key[0], value[0])
    gqa = key.shape[1] != query.shape[1]
    parts = []
    for c, (a, b, ancestors, mask) in enumerate(tree_chains):
        past = chain_pasts[c] if chain_pasts is not None else None
        spans = [(s, e) for s, e in ancestors] + [(a, b)]
        keys = [key[:, :, s:e] for s, e in spans]
        values = [value[:, :, s:e] for s, e in spans]
        if past is not None:
            keys.insert(0, past[module.layer_idx][0][None])
            values.insert(0, past[module.layer_idx][1][None])
        keys = keys[0] if len(keys) == 1 else torch.cat(keys, dim=2)
        values = values[0] if len(values) == 1 else torch.cat(values, dim=2)
        parts.append(
            torch.nn.functional.scaled_dot_product_attention(
                query[:, :, a:b], keys, values, attn_mask=mask, is_causal=mask is None, scale=scaling, enable_gqa=gqa
            )
        )
    return torch.cat(parts, dim=2).transpose(1, 2), None


def chain_masks(chains, device: torch.device, past_lengths=None) -> list[tuple]:
    """`tree_chains` with each chain's [length, seen + length] bool mask, where `seen` counts its
    ancestors' nodes and its `past_lengths` entry (keys held outside the stream); None for a chain
    that sees nothing before itself (plain causal)."""
    out = []
    for c, (a, b, ancestors) in enumerate(chains):
        seen = sum(e - s for s, e in ancestors) + (past_lengths[c] if past_lengths is not None else 0)
        mask = torch.ones(b - a, seen + b - a, dtype=torch.bool, device=device).tril(seen) if seen else None
        out.append((a, b, ancestors, mask))
    return out


def flex_attention_available(device: torch.device) -> bool:
    """Flex attention runs compiled kernels on CUDA; elsewhere tree streams use the sdpa mask."""
    if device.type != "cuda":
        return False
    try:
        importlib.import_module("torch.nn.attention.flex_attention").create_block_mask  # noqa: B018
    except (ImportError, AttributeError):
        return False
    return True


def tree_block_mask(subtree_end: torch.Tensor):
    """The tree rule as a flex-attention BlockMask (blocks nobody sees are skipped)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def visible(batch, head, query, key):
        return (key <= query) & (query < subtree_end[key])

    size = subtree_end.numel()
    return create_block_mask(visible, B=None, H=None, Q_LEN=size, KV_LEN=size, device=subtree_end.device)


@contextlib.contextmanager
def tree_attention(decoder, subtree_end: torch.Tensor, flex: bool | None = None):
    """Runs the block with attention along a token tree; yields the extra forward kwargs.

    `flex`: None picks flex attention where it runs (CUDA), else chain by chain on CPU, else the sdpa
    mask. An sdpa model is switched to the chosen attention for the block, and back afterwards."""
    config = decoder.config
    device = subtree_end.device
    use_flex = flex_attention_available(device) if flex is None else flex
    if not use_flex and device.type == "cpu" and config._attn_implementation == "sdpa":
        with switched_attention(config, TREE_CHAINS):
            yield {"tree_chains": chain_masks(tree_chains(subtree_end), device)}
        return
    if not use_flex:
        yield {"attention_mask": tree_mask(subtree_end)}
        return
    with switched_attention(config, "flex_attention"):
        yield {"attention_mask": tree_block_mask(subtree_end)}
