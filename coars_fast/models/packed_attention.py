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
`tree_attention` gives sdpa the tree's dense mask, or on CUDA flex attention a block mask of the
same rule, whose cost follows the visible blocks only.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect

import torch

VARLEN = "coars_varlen"  # our names in transformers' AttentionInterface
PER_SEQUENCE = "coars_per_sequence"


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
    _register()
    config._attn_implementation = kernel
    try:
        yield dict(cu_seq_lens_q=cu_seqlens, cu_seq_lens_k=cu_seqlens, max_length_q=max_len, max_length_k=max_len)
    finally:
        config._attn_implementation = "sdpa"


def tree_mask(subtree_end: torch.Tensor) -> torch.Tensor:
    """[1, 1, T, T] bool, True where query i may attend to key j: j is i or an ancestor of i (nodes
    in pre-order: j's subtree is [j, subtree_end[j]))."""
    nodes = torch.arange(subtree_end.numel(), device=subtree_end.device)
    query, key = nodes[:, None], nodes[None, :]
    return ((key <= query) & (query < subtree_end[None, :]))[None, None]


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
    """Runs the block with attention along a token tree; yields the extra forward kwargs (the mask).

    `flex`: None picks flex attention where it runs (CUDA), else the sdpa mask. An sdpa model is
    switched to transformers' flex attention for the block, and back afterwards."""
    config = decoder.config
    device = subtree_end.device
    use_flex = flex_attention_available(device) if flex is None else flex
    if not use_flex:
        yield {"attention_mask": tree_mask(subtree_end)}
        return
    previous = config._attn_implementation
    config._attn_implementation = "flex_attention"
    try:
        yield {"attention_mask": tree_block_mask(subtree_end)}
    finally:
        config._attn_implementation = previous
