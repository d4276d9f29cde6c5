"""Input checks shared by every backend: bad input raises ValueError naming the argument.

Every public op (fused or reference) validates through here before any kernel runs, so a kernel
never sees a target outside [0, V) (other than ignore_index), mismatched shapes or devices, or a
temperature that would turn the logits into inf/NaN.
"""

import math

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
# Kernels scale logits by 1 / temperature in fp32: below this, logits of ordinary size overflow to inf
# (1e-39 gave NaN log-probs). Far below any temperature worth sampling at.
MIN_TEMPERATURE = 1e-6


def _require_tensor(name, value):
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def _require_finite_number(name, value, *, positive=False, allow_inf=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a Python number, got {type(value).__name__}")
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _require_rows(name, value, n, device):
    """A floating [N] per-row tensor on `device` (rewards, token weights, old log-probs)."""
    _require_tensor(name, value)
    if value.dim() != 1 or value.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] (one value per row), got {list(value.shape)}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {value.dtype}")
    if value.device != device:
        raise ValueError(f"{name} is on {value.device} but hidden is on {device}")


def check_logprob_inputs(hidden, weight, targets, *, temperature, ignore_index):
    """Checks the inputs common to token_logprobs, teacher_student_logprobs and coars_loss."""
    _require_tensor("hidden", hidden)
    _require_tensor("weight", weight)
    _require_tensor("targets", targets)
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be 2-D [N, D] (response rows only), got shape {list(hidden.shape)}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [V, D], got shape {list(weight.shape)}")
    n, d = hidden.shape
    vocab = weight.shape[0]
    if weight.shape[1] != d:
        raise ValueError(f"weight has D={weight.shape[1]} but hidden has D={d}")
    if vocab == 0 or d == 0:
        raise ValueError(f"weight must be non-empty, got shape {list(weight.shape)}")
    if hidden.dtype not in FLOAT_DTYPES:
        raise ValueError(f"hidden must be float32, bfloat16, float16 or float64, got {hidden.dtype}")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight is {weight.dtype} but hidden is {hidden.dtype}")
    if weight.device != hidden.device:
        raise ValueError(f"weight is on {weight.device} but hidden is on {hidden.device}")
    if targets.dim() != 1 or targets.shape[0] != n:
        raise ValueError(f"targets must have shape [{n}], got {list(targets.shape)}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets must be int64 or int32, got {targets.dtype}")
    if targets.device != hidden.device:
        raise ValueError(f"targets is on {targets.device} but hidden is on {hidden.device}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    _require_finite_number("temperature", temperature, positive=True)
    if temperature < MIN_TEMPERATURE:
        raise ValueError(
            f"temperature must be >= {MIN_TEMPERATURE:g} (logits / temperature overflow fp32), got {temperature}"
        )
    # One reduction (a single device sync on GPU) guards every later index computation.
    if n > 0:
        outside = ((targets < 0) | (targets >= vocab)) & (targets != ignore_index)
        if bool(outside.any()):
            bad = targets[outside][0].item()
            raise ValueError(f"targets holds {bad}, outside [0, {vocab}) and not ignore_index={ignore_index}")


def check_teacher_hidden(hidden, teacher_hidden):
    """The teacher rows of teacher_student_logprobs / coars_loss: like hidden (after check_logprob_inputs)."""
    _require_tensor("teacher_hidden", teacher_hidden)
    if teacher_hidden.shape != hidden.shape:
        raise ValueError(f"teacher_hidden has shape {list(teacher_hidden.shape)} but hidden has {list(hidden.shape)}")
    if teacher_hidden.dtype != hidden.dtype:
        raise ValueError(f"teacher_hidden is {teacher_hidden.dtype} but hidden is {hidden.dtype}")
    if teacher_hidden.device != hidden.device:
        raise ValueError(f"teacher_hidden is on {teacher_hidden.device} but hidden is on {hidden.device}")


def check_backend_dtype(backend, hidden):
    """The Triton kernels compute in fp32 from fp32/bf16/fp16 loads; float64 needs another backend."""
    if backend in ("triton", "gemm") and hidden.dtype == torch.float64:
        raise ValueError(
            f"hidden is float64, which the {backend} backend does not run (use COARS_FAST_BACKEND=cpu or torch)"
        )


def check_loss_inputs(hidden, rewards, token_weights, *, distill_coef, credit_clip, old_logprobs, ppo_clip):
    """Checks the loss-specific inputs of coars_loss (after check_logprob_inputs)."""
    n, device = hidden.shape[0], hidden.device
    _require_rows("rewards", rewards, n, device)
    _require_rows("token_weights", token_weights, n, device)
    _require_finite_number("distill_coef", distill_coef)
    _require_finite_number("credit_clip", credit_clip, positive=True, allow_inf=True)
    if (old_logprobs is None) != (ppo_clip is None):
        raise ValueError("old_logprobs and ppo_clip go together: give both for the PPO surrogate, or neither")
    if old_logprobs is not None:
        _require_rows("old_logprobs", old_logprobs, n, device)
        _require_finite_number("ppo_clip", ppo_clip, positive=True)
