"""Linear layers of few rows through oneDNN on CPU (generation's decode steps).

A decode step multiplies a handful of rows by every weight of the model, so it is bound by reading
the weights. At 16-20 rows MKL's sgemm (torch's fp32 path) reads them at 5-7 GB/s on the 2-core
machine. oneDNN's linear on a copy of each weight reordered once into its own blocked layout
(`mkldnn._reorder_linear_weight`, the layout torch's compiler uses for frozen CPU weights) and taking
the dense input as is (`mkldnn._linear_pointwise`: no per-call conversion of the input or output)
takes 0.55-0.8x MKL's time per decoder weight at 20 rows and 0.4x on the LM head (bench:
docs/RESULTS.md, fourteenth sitting). From about a thousand rows on (prefill) MKL is as fast or
faster, so larger inputs keep torch's path.
"""

from __future__ import annotations

import contextlib

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


def _reordered(module: torch.nn.Linear) -> torch.Tensor:
    """The module's weight in oneDNN's layout, made once per version of the weight (an in-place
    update or a new tensor makes a new one: never a stale weight)."""
    stamp = (module.weight.data_ptr(), module.weight._version)
    held = getattr(module, "_coars_onednn", None)
    if held is None or held[0] != stamp:
        held = (stamp, torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), 20))
        module._coars_onednn = held
    return held[1]


def _forward(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.shape[:-1].numel()
    if rows > SMALL_ROWS or x.dtype != torch.float32 or x.requires_grad:
        return torch.nn.functional.linear(x, module.weight, module.bias)
    bias = module.bias.detach() if module.bias is not None else None
    flat = x.reshape(rows, x.shape[-1]).contiguous()
    return _linear(flat, _reordered(module), bias).reshape(*x.shape[:-1], -1)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@contextlib.contextmanager
def small_batch_linears(model):
    """Within the block, every frozen nn.Linear of `model` (base weights; a LoRA matrix being trained
    keeps torch's path) computes inputs of at most SMALL_ROWS rows with oneDNN. Does nothing off CPU,
    off fp32 or without oneDNN's linear ops."""
    if not available(model):
        yield
        return
    patched = [
        m
        for m in model.modules()
        if type(m) is torch.nn.Linear and not m.weight.requires_grad and type(m.weight.data) is torch.Tensor
    ]
    for m in patched:
        m.forward = _forward.__get__(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward
