"""Linear layers of few rows through oneDNN on CPU (generation's decode steps).

A decode step multiplies a handful of rows by every weight of the model, so it is bound by reading
the weights. At these shapes MKL's sgemm (torch's fp32 path) reads them at 5-7 GB/s on the 2-core
machine; oneDNN, on a copy of each weight in its own blocked layout, at about twice that for the LM
head: a decode step of the embedded model at 20 rows x 400 positions takes 118 ms instead of 137.
At a few hundred rows and more (prefill) MKL is faster again, so larger inputs keep torch's path.
"""

from __future__ import annotations

import contextlib

import torch

SMALL_ROWS = 64  # inputs of at most this many rows go through oneDNN (measured: 0.95x MKL's time at 64, 1.15x at 512)


def available(model) -> bool:
    p = next(model.parameters())
    return p.device.type == "cpu" and p.dtype == torch.float32 and torch.backends.mkldnn.is_available()


def _onednn_weights(module: torch.nn.Linear):
    """(weight, bias) in oneDNN's layout, made once per version of the module's tensors."""
    stamp = tuple((t.data_ptr(), t._version) for t in (module.weight, module.bias) if t is not None)
    held = getattr(module, "_coars_onednn", None)
    if held is None or held[0] != stamp:
        bias = module.bias.detach().to_mkldnn() if module.bias is not None else None
        held = (stamp, module.weight.detach().to_mkldnn(), bias)
        module._coars_onednn = held
    return held[1], held[2]


def _forward(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.shape[:-1].numel()
    if rows > SMALL_ROWS or x.dtype != torch.float32 or x.requires_grad:
        return torch.nn.functional.linear(x, module.weight, module.bias)
    weight, bias = _onednn_weights(module)
    flat = x.reshape(rows, x.shape[-1]).contiguous().to_mkldnn()
    return torch._C._nn.mkldnn_linear(flat, weight, bias).to_dense().reshape(*x.shape[:-1], -1)


@contextlib.contextmanager
def small_batch_linears(model):
    """Within the block, every frozen nn.Linear of `model` (base weights; a LoRA matrix being trained
    keeps torch's path) computes inputs of at most SMALL_ROWS rows with oneDNN. Does nothing off CPU,
    off fp32 or without oneDNN."""
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
