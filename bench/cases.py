"""What the benchmarks run: shapes, inputs, and every implementation of each step, ours and the
baselines. Also a command line (`python bench/cases.py CASE IMPL SHAPE DTYPE`) that runs one
implementation in a fresh process and prints its peak extra resident memory (see measure.py).

Steps:
- "coars": teacher forward (no grad) + student forward and backward with a frozen head, through
  the CoARS loss; the project's training step.
- "logprobs": per-token log-probs of one model, forward and backward with an upstream gradient
  (the shape of CCE's and Liger's single-model losses).
"""

import contextlib
import json
import os
import sys

import torch
from measure import rss_high_water

from coars_fast.kernels import backend_cpu, coars_loss, token_logprobs

SHAPES = {
    "smoke": dict(n=256, d=64, v=1031),
    "cpu": dict(n=2048, d=576, v=49152),  # the embedded SmolLM2-135M head
    "gpu-4096": dict(n=16384, d=4096, v=151936),
    "gpu-896": dict(n=16384, d=896, v=151936),
}
SEQ_LEN = 128  # rows are grouped into sequences of this length for Liger's per-sequence GRPO
# Liger's GRPO at its best `chunk_size` (sequences per chunk), from bench/tune_liger_chunk.py; its
# default is 1
LIGER_CHUNK_SIZE = {"cpu": 8, "cuda": 1}  # cuda: not swept yet (no device lent)


def make_inputs(shape, dtype, device):
    s = SHAPES[shape]
    gen = torch.Generator().manual_seed(0)
    n, d, v = s["n"], s["d"], s["v"]

    def randn(*size, scale=1.0):
        return (torch.randn(*size, generator=gen) * scale).to(dtype=dtype, device=device)

    return dict(
        hidden=randn(n, d),
        teacher_hidden=randn(n, d),
        weight=randn(v, d, scale=2.0 / d**0.5),
        targets=torch.randint(0, v, (n,), generator=gen).to(device),
        rewards=torch.randn(n, generator=gen).to(device),
        token_weights=torch.full((n,), 1.0 / SEQ_LEN, device=device),
        upstream=torch.randn(n, generator=gen).to(device),
    )


@contextlib.contextmanager
def forced_backend(name):
    old = os.environ.get("COARS_FAST_BACKEND")
    os.environ["COARS_FAST_BACKEND"] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ["COARS_FAST_BACKEND"]
        else:
            os.environ["COARS_FAST_BACKEND"] = old


@contextlib.contextmanager
def streaming_backward_only():
    """Our CPU backend with the expected-weight-in-forward strategy switched off: the 4-pass alternative
    (teacher, student, recomputed logits, dH) to the default 3-pass one, for comparison."""
    backend_cpu.ACCUMULATES_EXPECTED_WEIGHT = False
    try:
        yield
    finally:
        backend_cpu.ACCUMULATES_EXPECTED_WEIGHT = True


def _naive_logprobs(hidden, weight, targets):
    """What a trainer does without fused kernels: fp32 logits, log_softmax, gather, autograd."""
    logits = (hidden @ weight.t()).float()
    return logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)


# --- coars step: each returns (loss, d loss / d student hidden) -------------------------------------


def _coars_ours(x):
    hidden = x["hidden"].detach().requires_grad_()
    loss, _ = coars_loss(hidden, x["teacher_hidden"], x["weight"], x["targets"], x["rewards"], x["token_weights"])
    loss.backward()
    return loss, hidden.grad


def coars_ours(x):
    return _coars_ours(x)


def coars_ours_streaming(x):
    with streaming_backward_only():
        return _coars_ours(x)


def coars_torch_fallback(x):
    with forced_backend("torch"):
        return _coars_ours(x)


def coars_gemm(x):
    with forced_backend("gemm"):
        return _coars_ours(x)


def coars_naive(x):
    hidden = x["hidden"].detach().requires_grad_()
    with torch.no_grad():
        logp_teacher = _naive_logprobs(x["teacher_hidden"], x["weight"], x["targets"])
    logp = _naive_logprobs(hidden, x["weight"], x["targets"])
    credit = (logp_teacher - logp.detach()).clamp(-1.0, 1.0)
    loss = -(x["token_weights"] * (x["rewards"] + 0.1 * credit) * logp).sum()
    loss.backward()
    return loss, hidden.grad


def coars_liger(x):
    """Liger's chunked GRPO loss for the student (per-sequence advantages: the same passes and
    gradient form, -advantage * d logp) plus the naive teacher forward it has no fused op for."""
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    n, d = x["hidden"].shape
    hidden = x["hidden"].detach().requires_grad_()
    with torch.no_grad():
        logp_teacher = _naive_logprobs(x["teacher_hidden"], x["weight"], x["targets"])
    device = x["weight"].device.type
    chunk = x.get("liger_chunk_size", LIGER_CHUNK_SIZE["cuda" if device == "cuda" else "cpu"])
    grpo = LigerFusedLinearGRPOLoss(beta=0.0, use_ref_model=False, compiled=device == "cuda", chunk_size=chunk)
    batch = n // SEQ_LEN
    advantages = x["rewards"].view(batch, SEQ_LEN).mean(1) + 0.1 * logp_teacher.view(batch, SEQ_LEN).mean(1)
    loss, _ = grpo(
        hidden.view(batch, SEQ_LEN, d),
        x["weight"],
        x["targets"].view(batch, SEQ_LEN),
        torch.ones(batch, SEQ_LEN, device=hidden.device),
        advantages,
    )
    loss.backward()
    return loss, hidden.grad


# --- log-prob step: each returns (logp, d (upstream . logp) / d hidden) ------------------------------


def _logprobs_ours(x):
    hidden = x["hidden"].detach().requires_grad_()
    logp = token_logprobs(hidden, x["weight"], x["targets"])
    logp.backward(x["upstream"])
    return logp, hidden.grad


def logprobs_ours(x):
    return _logprobs_ours(x)


def logprobs_torch_fallback(x):
    with forced_backend("torch"):
        return _logprobs_ours(x)


def logprobs_gemm(x):
    with forced_backend("gemm"):
        return _logprobs_ours(x)


def logprobs_naive(x):
    hidden = x["hidden"].detach().requires_grad_()
    logp = _naive_logprobs(hidden, x["weight"], x["targets"])
    logp.backward(x["upstream"])
    return logp, hidden.grad


def logprobs_cce(x):
    """Cut Cross-Entropy's per-token loss (= -logp): torch.compile on CPU, its Triton kernels on CUDA."""
    from cut_cross_entropy import linear_cross_entropy

    hidden = x["hidden"].detach().requires_grad_()
    impl = "cce" if hidden.is_cuda else "torch_compile"
    logp = -linear_cross_entropy(hidden, x["weight"], x["targets"], impl=impl, reduction="none")
    logp.backward(x["upstream"])
    return logp, hidden.grad


IMPLEMENTATIONS = {
    "coars": {
        "ours": coars_ours,
        "ours-streaming": coars_ours_streaming,
        "naive": coars_naive,
        "liger": coars_liger,
        "torch-fallback": coars_torch_fallback,
        "gemm": coars_gemm,
    },
    "logprobs": {
        "ours": logprobs_ours,
        "naive": logprobs_naive,
        "cce": logprobs_cce,
        "torch-fallback": logprobs_torch_fallback,
        "gemm": logprobs_gemm,
    },
}


def peak_extra_rss(case, impl, shape, dtype):
    return rss_high_water(IMPLEMENTATIONS[case][impl], make_inputs(shape, getattr(torch, dtype), "cpu"))


if __name__ == "__main__":
    case, impl, shape, dtype = sys.argv[1:5]
    print(json.dumps({"peak_extra_bytes": peak_extra_rss(case, impl, shape, dtype)}))
