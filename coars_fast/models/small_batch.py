"""Linear layers of few rows through oneDNN on CPU (generation's decode steps).

A decode step multiplies a handful of rows by every weight of the model, so it is bound by reading
the weights. At 16-20 rows MKL's sgemm (torch's fp32 path) reads them at 5-7 GB/s on the 2-core
machine. oneDNN's linear on a copy of each weight reordered once into its own blocked layout
(`mkldnn._reorder_linear_weight`, the layout torch's compiler uses for frozen CPU weights) and taking
the dense input as is (`mkldnn._linear_pointwise`: no per-call conversion of the input or output)
takes 0.55-0.8x MKL's time per decoder weight at 20 rows and 0.4x on the LM head (bench:
docs/RESULTS.md, fourteenth sitting). From about a thousand rows on (prefill) MKL is as fast or
faster, so larger inputs keep torch's path.

A LoRA layer (PEFT) with one active adapter goes through one such linear too, on its base weight
plus the adapter's scaling * B A, merged and reordered once per version of the three weights (once
per adapter and training step, ~0.2-0.35 s each for the 135M model): PEFT's two small products and
the sum took 13% of a 4-episode rollout in the decode steps; merged, the rollout takes 0.94x the time
(docs/RESULTS.md, fifteenth sitting), for one more reordered copy of the decoder's weights per adapter.
"""

from __future__ import annotations

import contextlib
import weakref

import torch

SMALL_ROWS = 256  # inputs of at most this many rows go through oneDNN (measured: 0.9x MKL's time at 256, 1.1x at 1,024)
_OPS = ("_reorder_linear_weight", "_linear_pointwise")


def available(model) -> bool:
    p = next(model.parameters())
    return (
        p.device.type == "cpu"
        and p.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and all(hasattr(torch.ops.mkldnn, op) for op in _OPS)
    )


def _held(module, key, weights, weight_fn) -> torch.Tensor:
    """`weight_fn()` in oneDNN's layout, kept on `module` under `key` and made again once any of
    `weights` is another tensor (a replacement could take a freed address) or changed in place
    (its version): never a stale weight."""
    stamp = tuple((w.data_ptr(), w._version) for w in weights)
    held = module.__dict__.setdefault("_coars_onednn", {})
    kept = held.get(key)
    if kept is None or kept[1] != stamp or any(ref() is not w for ref, w in zip(kept[0], weights)):
        with torch.no_grad():
            reordered = torch.ops.mkldnn._reorder_linear_weight(weight_fn(), 20)
        kept = held[key] = ([weakref.ref(w) for w in weights], stamp, reordered)
    return kept[2]


def _reordered(module: torch.nn.Linear) -> torch.Tensor:
    return _held(module, None, (module.weight,), module.weight.detach)


def _forward(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.shape[:-1].numel()
    if rows > SMALL_ROWS or x.dtype != torch.float32 or x.requires_grad:
        return torch.nn.functional.linear(x, module.weight, module.bias)
    bias = module.bias.detach() if module.bias is not None else None
    flat = x.reshape(rows, x.shape[-1]).contiguous()
    return _linear(flat, _reordered(module), bias).reshape(*x.shape[:-1], -1)


def _merged(module, x: torch.Tensor) -> torch.Tensor | None:
    """A PEFT LoRA layer's base weight + scaling * B A of its one active adapter, reordered, made
    once per version of the three weights and per adapter; None where PEFT's own forward is needed:
    many rows, a gradient to keep, several or no active adapters, a merged or disabled adapter, a
    variant (DoRA), live dropout, a bias on B."""
    base = module.base_layer
    active = [a for a in module.active_adapters if a in module.lora_A]
    if (
        x.shape[:-1].numel() > SMALL_ROWS
        or x.dtype != torch.float32
        or type(base) is not torch.nn.Linear
        or module.disable_adapters
        or module.merged
        or getattr(module, "fan_in_fan_out", False)
        or len(active) != 1
    ):
        return None
    name = active[0]
    a, b, dropout = module.lora_A[name], module.lora_B[name], module.lora_dropout[name]
    if (
        name in getattr(module, "lora_variant", {})
        or b.bias is not None
        or (dropout.training and not isinstance(dropout, torch.nn.Identity))
        or (torch.is_grad_enabled() and (x.requires_grad or a.weight.requires_grad or b.weight.requires_grad))
    ):
        return None
    scaling = module.scaling[name]
    return _held(
        module,
        (name, scaling),
        (base.weight, a.weight, b.weight),
        lambda: torch.addmm(base.weight, b.weight, a.weight, alpha=scaling),
    )


def _lora_forward(module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    weight = None if args or kwargs else _merged(module, x)
    if weight is None:
        return type(module).forward(module, x, *args, **kwargs)
    rows = x.shape[:-1].numel()
    bias = module.base_layer.bias.detach() if module.base_layer.bias is not None else None
    return _linear(x.reshape(rows, x.shape[-1]).contiguous(), weight, bias).reshape(*x.shape[:-1], -1)


def _lora_linear_type():
    try:
        from peft.tuners.lora import Linear
    except ImportError:  # no PEFT: no LoRA layers
        return None
    return Linear


def _fsdp_sharded(model) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return any(isinstance(m, FSDPModule) for m in model.modules())


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@contextlib.contextmanager
def small_batch_linears(model):
    """Within the block, every frozen nn.Linear of `model` (base weights; a LoRA matrix being trained
    keeps torch's path) and every PEFT LoRA linear with one active adapter (base + B A merged)
    computes inputs of at most SMALL_ROWS rows with oneDNN. Does nothing off CPU,
    off fp32 or without oneDNN's linear ops."""
    if not available(model):
        yield
        return
    # Under FSDP each rollout gathers the adapters into fresh storage, which may take a freed
    # address and version: a merge keyed on them could be served stale, so sharded models keep
    # PEFT's own LoRA forward.
    lora = None if _fsdp_sharded(model) else _lora_linear_type()
    patched = []
    for m in model.modules():
        if type(m) is torch.nn.Linear and not m.weight.requires_grad and type(m.weight.data) is torch.Tensor:
            m.forward = _forward.__get__(m)
        elif lora is not None and type(m) is lora:
            m.forward = _lora_forward.__get__(m)
        else:
            continue
        patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward
