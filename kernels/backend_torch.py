"""Pure-torch backend: the same per-row statistics as the fused kernels, on bounded row chunks.

Each chunk materialises its [rows, V] logits (at most WORKSPACE_BYTES), so memory stays bounded
without any compiled code. It runs anywhere torch does; it is the fallback when neither the C++
extension (CPU) nor Triton (CUDA) is available, and a baseline in bench/.
"""

import functools

import torch

# Budget for one [rows, V] chunk of logits or logit gradients (also used by the streaming backward), per
# device type: a GPU needs chunks tall enough for the chunk's GEMMs to fill it (bench/tune_triton_blocks.py).
WORKSPACE_BYTES = {"cpu": 64 << 20, "cuda": 256 << 20}
ACCUMULATES_EXPECTED_WEIGHT = True


def partials_dtype(dtype):
    """Statistics, log-probs and gradients are float32, or float64 for float64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def gemm_dtype(dtype, device):
    """The dtype the big GEMMs run in: the input dtype on GPUs (tensor cores), else the stat dtype
    (bf16 GEMMs are ~90x slower than fp32 on AVX2 CPUs)."""
    return dtype if device.type == "cuda" else partials_dtype(dtype)


def chunk_rows(vocab, dtype, device):
    """Rows per [rows, vocab] chunk that fit the workspace budget of `device`'s type."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    budget = WORKSPACE_BYTES.get(torch.device(device).type, WORKSPACE_BYTES["cpu"])
    return max(1, budget // (vocab * itemsize))


def _chunk_logits(hidden, weight, inv_temperature, out_dtype):
    rows = hidden.to(weight.dtype)
    if weight.dtype == out_dtype:
        return (rows @ weight.t()).mul_(inv_temperature)
    # A 16-bit GEMM (GPU) accumulates in fp32; its logits must reach the softmax in fp32 too, not
    # rounded to 16 bits on the way out (that cost up to ~0.4% of each logit).
    if _mm_has_out_dtype(rows.device.type):
        return torch.mm(rows, weight.t(), out_dtype=out_dtype).mul_(inv_temperature)
    return (rows.to(out_dtype) @ weight.t().to(out_dtype)).mul_(inv_temperature)


@functools.cache
def _mm_has_out_dtype(device_type: str) -> bool:
    """Whether torch.mm takes out_dtype (16-bit inputs, fp32 result) on this device type."""
    try:
        x = torch.ones(2, 2, dtype=torch.bfloat16, device=device_type)
        return torch.mm(x, x, out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError, NotImplementedError):
        return False


def vocab_partials(hidden, teacher_hidden, weight, targets, inv_temperature, with_entropy, with_expected_weight):
    """Per-row softmax statistics over the whole vocabulary (one "range"), see kernels/merge.py."""
    n, vocab = hidden.shape[0], weight.shape[0]
    pdtype = partials_dtype(hidden.dtype)
    w = weight.to(gemm_dtype(weight.dtype, weight.device))
    row_sets = [hidden] if teacher_hidden is None else [hidden, teacher_hidden]
    partials = torch.zeros(1, 4, len(row_sets) * n, dtype=pdtype, device=hidden.device)
    weight_partials = (
        torch.empty(1, n, hidden.shape[1], dtype=pdtype, device=hidden.device) if with_expected_weight else None
    )
    in_vocab = (targets >= 0) & (targets < vocab)
    safe_targets = torch.where(in_vocab, targets, 0)
    step = chunk_rows(vocab, pdtype, hidden.device)
    for set_index, rows in enumerate(row_sets):
        for start in range(0, n, step):
            chunk = slice(start, start + step)
            out = slice(set_index * n + start, set_index * n + min(start + step, n))
            z = _chunk_logits(rows[chunk], w, inv_temperature, pdtype)
            target = z.gather(1, safe_targets[chunk, None]).squeeze(1)
            partials[0, 2, out] = torch.where(in_vocab[chunk], target, 0)
            row_max = z.amax(1)
            partials[0, 0, out] = row_max
            shifted = z.sub_(row_max[:, None])
            p = shifted.exp()
            partials[0, 1, out] = p.sum(1)
            if with_entropy:
                partials[0, 3, out] = (p * shifted).sum(1)
            if with_expected_weight and set_index == 0:
                weight_partials[0, chunk] = (p.to(w.dtype) @ w).to(pdtype)
    return partials, weight_partials


def logit_grad(hidden, weight, targets, lse, logp_coef, entropy_coef, mean_logit, inv_temperature):
    """d(sum_r a_r logp_r + b_r entropy_r) / d logits for a row chunk; `weight` is already in the
    GEMM dtype, and so is the result."""
    z = _chunk_logits(hidden, weight, inv_temperature, lse.dtype)
    p = z.sub(lse[:, None]).exp_()
    grad = p * -logp_coef[:, None]
    if entropy_coef is not None:
        grad.sub_(entropy_coef[:, None] * p * z.sub_(mean_logit[:, None]))
    in_vocab = (targets >= 0) & (targets < weight.shape[0])
    grad.scatter_add_(1, torch.where(in_vocab, targets, 0)[:, None], torch.where(in_vocab, logp_coef, 0)[:, None])
    return grad.to(weight.dtype)
