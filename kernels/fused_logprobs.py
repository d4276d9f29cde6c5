"""The autograd engine behind every fused op: per-token log-probs (student, optional teacher rows
sharing each weight tile, optional entropy) from hidden states and the LM-head weight, never
holding more than a bounded chunk of logits.

Forward: the backend streams the vocabulary with an online log-sum-exp and returns per-range
statistics (kernels/merge.py). Backward, two strategies:

- Expected weight in forward (frozen head, i.e. LoRA training; backends that can): d logp_i / d h_i =
  (W[y_i] - sum_j p_ij W_j) / T is independent of the upstream gradient, and the softmax-weighted
  sum of weight rows can be accumulated in the same vocabulary sweep (flash-attention style, one
  extra GEMM per tile). The backward is then g_i * J_i: two weight passes for forward + backward
  instead of three, and [N, D] extra memory.
- Streaming (weight gradient, entropy gradient, or a backend without the above): row chunks of
  d loss / d logits are recomputed within a bounded workspace and turned into dH = dlogits @ W and
  dW = dlogits^T @ H by plain GEMMs, in a fixed order (deterministic, no atomics).

Gradients flow to the student rows and the weight only; teacher log-probs are not differentiable.
"""

import torch

from .backend_torch import chunk_rows, gemm_dtype
from .backends import backend_module
from .merge import merge_vocab_partials
from .validation import check_backend_dtype


class FusedLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden,
        teacher_hidden,
        weight,
        targets,
        temperature,
        ignore_index,
        with_entropy,
        backend,
        with_expected_weight,
    ):
        ctx.set_materialize_grads(False)
        module = backend_module(backend)
        n = hidden.shape[0]
        inv_temperature = 1.0 / temperature
        hidden, weight, targets = hidden.contiguous(), weight.contiguous(), targets.long().contiguous()
        if teacher_hidden is not None:
            teacher_hidden = teacher_hidden.contiguous()

        partials, weight_partials = module.vocab_partials(
            hidden, teacher_hidden, weight, targets, inv_temperature, with_entropy, with_expected_weight
        )
        rows = merge_vocab_partials(partials, weight_partials)
        valid = targets != ignore_index
        logp = (rows.target_logit[:n] - rows.lse[:n]).masked_fill_(~valid, 0)
        empty = logp.new_empty(0)
        logp_teacher = empty
        if teacher_hidden is not None:
            logp_teacher = (rows.target_logit[n:] - rows.lse[n:]).masked_fill_(~valid, 0)
        entropy = rows.entropy[:n].masked_fill(~valid, 0) if with_entropy else empty
        logp_grad = None
        if with_expected_weight:
            target_rows = weight[targets.masked_fill(~valid, 0)].to(logp.dtype)
            logp_grad = (target_rows - rows.expected_weight).mul_(inv_temperature).masked_fill_(~valid[:, None], 0)

        ctx.backend = backend
        ctx.inv_temperature = inv_temperature
        ctx.with_entropy = with_entropy
        ctx.save_for_backward(hidden, weight, targets, valid, rows.lse[:n], entropy, logp_grad)
        ctx.mark_non_differentiable(logp_teacher)
        return logp, logp_teacher, entropy

    @staticmethod
    def backward(ctx, grad_logp, _grad_logp_teacher, grad_entropy):
        hidden, weight, targets, valid, lse, entropy, logp_grad = ctx.saved_tensors
        grad_entropy = grad_entropy if ctx.with_entropy else None
        grad_hidden = grad_weight = None
        if grad_logp is not None or grad_entropy is not None:
            grad_logp = torch.zeros_like(lse) if grad_logp is None else grad_logp.to(lse.dtype)
            if logp_grad is not None and grad_entropy is None:
                grad_hidden = grad_logp[:, None] * logp_grad
            else:
                scale = valid.to(lse.dtype) * ctx.inv_temperature
                entropy_coef = mean_logit = None
                if grad_entropy is not None:
                    entropy_coef = grad_entropy.to(lse.dtype) * scale
                    mean_logit = lse - entropy  # E_p[z], since entropy = lse - E_p[z]
                grad_hidden, grad_weight = streaming_backward(
                    backend_module(ctx.backend),
                    hidden,
                    weight,
                    targets,
                    lse,
                    grad_logp * scale,
                    entropy_coef,
                    mean_logit,
                    ctx.inv_temperature,
                    ctx.needs_input_grad[0],
                    ctx.needs_input_grad[2],
                )
        grad_hidden = None if grad_hidden is None else grad_hidden.to(hidden.dtype)
        grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
        return grad_hidden, None, grad_weight, None, None, None, None, None, None


def streaming_backward(
    module, hidden, weight, targets, lse, logp_coef, entropy_coef, mean_logit, inv_temperature, need_hidden, need_weight
):
    """dH and/or dW of sum_i (a_i logp_i + b_i entropy_i), one bounded [rows, V] chunk at a time."""
    w = weight.to(gemm_dtype(weight.dtype, weight.device))
    n = hidden.shape[0]
    grad_hidden = hidden.new_empty(hidden.shape, dtype=w.dtype) if need_hidden else None
    grad_weight = torch.zeros_like(w) if need_weight else None
    step = chunk_rows(w.shape[0], w.dtype, w.device)
    for start in range(0, n, step):
        rows = slice(start, start + step)
        h = hidden[rows].to(w.dtype)
        dlogits = module.logit_grad(
            h,
            w,
            targets[rows],
            lse[rows],
            logp_coef[rows],
            None if entropy_coef is None else entropy_coef[rows],
            None if mean_logit is None else mean_logit[rows],
            inv_temperature,
        )
        if need_hidden:
            torch.mm(dlogits, w, out=grad_hidden[rows])
        if need_weight:
            grad_weight.addmm_(dlogits.t(), h)
    return grad_hidden, grad_weight


def fused_logprobs(hidden, teacher_hidden, weight, targets, *, temperature, ignore_index, with_entropy, backend):
    """(logp [N], logp_teacher [N] or empty, entropy [N] or empty) on an already validated input.

    The expected-weight pass runs when the student rows will need a gradient and the head will not (the
    Function cannot tell: its forward always runs with grad disabled)."""
    check_backend_dtype(backend, hidden)
    with_expected_weight = (
        torch.is_grad_enabled()
        and hidden.requires_grad
        and not weight.requires_grad
        and backend_module(backend).ACCUMULATES_EXPECTED_WEIGHT
    )
    return FusedLogprobs.apply(
        hidden,
        teacher_hidden,
        weight,
        targets,
        float(temperature),
        ignore_index,
        with_entropy,
        backend,
        with_expected_weight,
    )
