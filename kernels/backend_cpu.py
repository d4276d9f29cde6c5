"""C++/OpenMP backend (csrc/, built into coars_fast.kernels._C): torch.ops.coars_fast.*.

The shared library registers the ops with torch and has no Python module of its own, so it is
found with importlib and loaded with torch.ops.load_library on first use.
"""

import importlib.util

import torch

ACCUMULATES_EXPECTED_WEIGHT = True
_load_error = ...  # Ellipsis: not tried yet; None: loaded; else why it could not load


def _load():
    spec = importlib.util.find_spec(f"{__package__}._C")
    if spec is None or spec.origin is None:
        return "the C++ extension coars_fast.kernels._C is not built (pip install --no-build-isolation -e .)"
    try:
        torch.ops.load_library(spec.origin)
    except OSError as error:
        return f"cannot load {spec.origin}: {error}"
    return None


def unavailable_reason(device):
    global _load_error
    if device.type != "cpu":
        return f"it runs on CPU tensors only, not {device.type}"
    if _load_error is ...:
        _load_error = _load()
    return _load_error


def vocab_partials(hidden, teacher_hidden, weight, targets, inv_temperature, with_entropy, with_expected_weight):
    partials, weight_partials = torch.ops.coars_fast.vocab_partials(
        hidden, teacher_hidden, weight, targets, inv_temperature, with_entropy, with_expected_weight
    )
    return partials, weight_partials if with_expected_weight else None


def logit_grad(hidden, weight, targets, lse, logp_coef, entropy_coef, mean_logit, inv_temperature):
    return torch.ops.coars_fast.logit_grad(
        hidden, weight, targets, lse, logp_coef, entropy_coef, mean_logit, inv_temperature
    )
