"""Which implementation runs, chosen per device, and said out loud.

- "triton": the Triton kernels, on CUDA (or on CPU tensors under TRITON_INTERPRET=1, for tests);
- "gemm": cuBLAS GEMMs in row chunks with a Triton epilogue (same devices as "triton"): three weight
  passes for the CoARS step where "triton" makes four; which is faster is measured in bench/;
- "cpu": the C++/OpenMP extension coars_fast.kernels._C, on CPU;
- "torch": the pure-torch chunked fallback, anywhere;
- "reference": materialised logits (coars_fast.kernels.reference), anywhere; for debugging.

COARS_FAST_BACKEND=<name> forces one (an error if it cannot run on the tensors' device). Otherwise
CUDA expects "triton" and CPU expects "cpu"; when that one is unavailable the torch fallback runs
and a RuntimeWarning names both, once per device type. Backend modules are imported lazily, so
`import coars_fast.kernels` stays cheap and never needs triton.
"""

import importlib
import importlib.util
import os
import warnings

import torch

BACKENDS = ("triton", "gemm", "cpu", "torch", "reference")
ENV_VAR = "COARS_FAST_BACKEND"
_MODULES = {"triton": "backend_triton", "gemm": "backend_gemm", "cpu": "backend_cpu", "torch": "backend_torch"}
_warned = set()


def _unavailable_reason(name, device):
    """None when backend `name` can run on `device`, else a short reason."""
    if name in ("torch", "reference"):
        return None
    module = importlib.import_module(f"{__package__}.{_MODULES[name]}")
    return module.unavailable_reason(device)


def active_backend(device):
    """The name of the backend the ops use for tensors on `device` (see the module docstring)."""
    device = torch.device(device)
    forced = os.environ.get(ENV_VAR, "").strip()
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"{ENV_VAR}={forced!r} is not one of {', '.join(BACKENDS)}")
        reason = _unavailable_reason(forced, device)
        if reason:
            raise RuntimeError(f"{ENV_VAR}={forced} cannot run on {device}: {reason}")
        return forced
    expected = {"cuda": "triton", "cpu": "cpu"}.get(device.type)
    if expected is None:
        return "torch"
    reason = _unavailable_reason(expected, device)
    if reason is None:
        return expected
    if device.type not in _warned:
        _warned.add(device.type)
        warnings.warn(
            f"coars_fast.kernels: the {expected} backend is unavailable on {device.type} ({reason}); "
            f"using the slower pure-torch backend",
            RuntimeWarning,
            stacklevel=3,
        )
    return "torch"


def backend_module(name):
    """The module implementing backend `name` ("triton", "gemm", "cpu" or "torch")."""
    return importlib.import_module(f"{__package__}.{_MODULES[name]}")
