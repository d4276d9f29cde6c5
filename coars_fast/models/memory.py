"""Activation memory of the training forward: decoder layers recomputed in backward instead of kept
(`train.checkpoint_activations`), and Liger-Kernel's fused RMSNorm, SwiGLU and RoPE on CUDA
(`model.liger_patches`; Liger's losses are never used: the fused CoARS loss is ours)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging

import torch

from coars_fast.errors import ConfigError
from coars_fast.models.packed_attention import switched_attention

log = logging.getLogger(__name__)


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def checkpoint_activations(model) -> None:
    """Each decoder layer keeps only its input for backward and recomputes the rest there
    (transformers' activation checkpointing, non-reentrant; it acts in training mode with gradients
    on, so generation and the no-grad teacher forward are untouched). The packed and tree attentions
    switch the model's attention implementation only while their forward runs, so the recomputation,
    which runs later in backward, gets the implementation the forward used."""
    base = _base(model)
    config = base.config

    def contexts():  # called at forward time; the second context wraps the recomputation
        return contextlib.nullcontext(), switched_attention(config, config._attn_implementation)

    base.activation_checkpointing_enable(
        activation_checkpointing_kwargs={"use_reentrant": False, "context_fn": contexts}
    )


def liger_unavailable(device: str | None) -> str | None:
    """Why Liger's patches cannot run on `device` (None: CUDA when available), or None when they can."""
    installed = importlib.util.find_spec("liger_kernel") is not None
    kind = torch.device(device).type if device else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and installed:
        return None
    return f"needs CUDA and liger-kernel (pip install liger-kernel); here: device {kind}, liger-kernel " + (
        "installed" if installed else "missing"
    )


def liger_patches(model, device: torch.device) -> None:
    """Apply Liger's RMSNorm, SwiGLU and RoPE kernels to `model` in place (Triton kernels: CUDA only)."""
    problem = liger_unavailable(str(device))
    if problem:
        raise ConfigError(f"model.liger_patches {problem}")
    from liger_kernel.transformers import _apply_liger_kernel_to_instance  # dispatches on the model type

    _apply_liger_kernel_to_instance(
        model=_base(model), rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False
    )
    log.info("Liger patches applied: RMSNorm, SwiGLU, RoPE")
