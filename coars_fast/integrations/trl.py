"""coars-fast's fused log-prob kernels inside TRL's trainers.

TRL (>= 1.16) computes per-token log-probs through a fused LM head that its trainers add to the
model (`trl.trainer.utils.add_fused_lm_head`): the backbone's hidden states go through
`ChunkedLogProbFunction` in vocabulary chunks. `use_coars_kernels()` routes that call to
`coars_fast.kernels.token_logprobs` (the C++ backend on CPU, Triton on CUDA), which computes the
same log-probs and entropies in one sweep over the head. Three lines in a TRL script:

    from coars_fast.integrations.trl import use_coars_kernels
    use_coars_kernels()                     # before the trainer is built or run
    trainer = GRPOTrainer(model=..., ...)   # unchanged

Calls our kernels cannot serve exactly (a bias on the LM head, a logit soft-cap or scale, or per-token
fields other than log-probs and entropy) go to TRL's own function, so results never change meaning.
"""

from __future__ import annotations

import contextlib

import torch

TESTED_TRL = "1.16.0"
_SUPPORTED_OUTPUTS = {"log_probs", "entropy"}


def _trl_utils():
    try:
        from trl.trainer import utils
    except ImportError as err:
        raise ImportError("coars_fast.integrations.trl needs TRL: pip install 'coars-fast[trl]'") from err
    if not hasattr(utils, "_ChunkedLogProbFunction"):
        raise ImportError(
            f"this TRL has no fused LM head to plug into (tested with trl=={TESTED_TRL}); "
            "use coars_fast.kernels.token_logprobs on the model's hidden states directly"
        )
    return utils


class CoarsLogProbFunction:
    """Stands in for TRL's `ChunkedLogProbFunction`: the same `apply` signature and result tuple
    (log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1)."""

    fallback = None  # TRL's own function, set by use_coars_kernels

    @classmethod
    def apply(
        cls,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        temperature: float,
        chunk_size: int,
        final_logit_softcapping: float | None = None,
        logit_scale: float = 1.0,
        outputs: tuple[str, ...] = ("log_probs",),
    ):
        if (
            bias is not None
            or final_logit_softcapping is not None
            or logit_scale != 1.0
            or not set(outputs) <= _SUPPORTED_OUTPUTS
        ):
            return cls.fallback.apply(
                hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping, logit_scale, outputs
            )
        from coars_fast.kernels import token_logprobs

        dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) else None
        with torch.autocast(hidden.device.type, enabled=False):
            if dtype is not None:  # TRL projects in the autocast dtype; so do we, outside autocast
                hidden, weight = hidden.to(dtype), weight.to(dtype)
            if "entropy" in outputs:
                logp, entropy = token_logprobs(hidden, weight, targets, temperature=temperature, return_entropy=True)
            else:
                logp, entropy = token_logprobs(hidden, weight, targets, temperature=temperature), None
        return logp, entropy, None, None, None


def use_coars_kernels() -> contextlib.AbstractContextManager:
    """Route TRL's fused LM head to coars-fast's kernels from now on; the returned context manager
    (optional: `with use_coars_kernels(): ...`) restores TRL's own on exit."""
    utils = _trl_utils()
    original = utils._ChunkedLogProbFunction
    if original is not CoarsLogProbFunction:
        CoarsLogProbFunction.fallback = original
    utils._ChunkedLogProbFunction = CoarsLogProbFunction

    @contextlib.contextmanager
    def restore():
        try:
            yield
        finally:
            utils._ChunkedLogProbFunction = CoarsLogProbFunction.fallback

    return restore()
