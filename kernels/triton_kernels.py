"""Triton kernels of the "triton" backend (imported only by backend_triton, so only when used).

Forward: one program per (row block, vocabulary range) streams BLOCK_V-wide vocabulary tiles,
computes the student (and teacher) logits tile from one load of each weight tile, and folds it into
an online log-sum-exp in fp32; per-range statistics are merged in torch (kernels/merge.py).
Backward: one program per (row block, vocabulary tile) recomputes its logits tile and writes
d loss / d logits for a bounded row chunk; cuBLAS turns the chunk into dH and dW. No atomics.

Offsets are int64 before they meet a stride (N x V passes 2^31 at 16k x 152k). Grids put the
unbounded dimension on axis 0 (axes 1 and 2 stop at 65,535). UPCAST (set under TRITON_INTERPRET)
widens loads to fp32 because the interpreter's tl.dot is wrong for bf16.
"""

import triton
import triton.language as tl


@triton.jit
def block_offsets(block_index, BLOCK: tl.constexpr):
    """Indices block_index * BLOCK + [0, BLOCK) as int64, ready to be multiplied by a stride (the
    indices themselves stay below N or V < 2^31; their products with strides do not)."""
    return (block_index * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)


@triton.jit
def _load_tile(ptr, rows, row_mask, ks, k_mask, stride, UPCAST: tl.constexpr):
    tile = tl.load(ptr + rows[:, None] * stride + ks[None, :], mask=row_mask[:, None] & k_mask[None, :], other=0.0)
    if UPCAST:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _fold_tile(z, cols, col_mask, targets, m, s, t, e, WITH_ENTROPY: tl.constexpr):
    """Online log-sum-exp: folds a [BLOCK_M, BLOCK_V] tile of z = logits / T into the running row
    statistics (max, sum exp(z - max), target logit, sum exp(z - max) (z - max))."""
    z = tl.where(col_mask[None, :], z, float("-inf"))
    t += tl.sum(tl.where(cols[None, :] == targets[:, None], z, 0.0), 1)
    m_new = tl.maximum(m, tl.max(z, 1))
    scale = tl.exp(m - m_new)  # 0 on the first tile (m = -inf)
    # Kept finite (0) outside the vocabulary so that no 0 * inf is ever formed.
    shifted = tl.where(col_mask[None, :], z - m_new[:, None], 0.0)
    p = tl.where(col_mask[None, :], tl.exp(shifted), 0.0)
    if WITH_ENTROPY:
        carried_shift = tl.where(s > 0, m - m_new, 0.0)
        e = scale * (e + carried_shift * s) + tl.sum(p * shifted, 1)
    s = s * scale + tl.sum(p, 1)
    return m_new, s, t, e


@triton.jit
def _row_block_start(targets_ptr, N, BLOCK_M: tl.constexpr):
    """This program's rows, their mask and targets, and empty running statistics (max, sum, target
    logit, entropy sum) for _fold_tile."""
    rows = block_offsets(tl.program_id(0), BLOCK_M)
    row_mask = rows < N
    targets = tl.load(targets_ptr + rows, mask=row_mask, other=-1)
    m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    zeros = tl.zeros((BLOCK_M,), tl.float32)
    return rows, row_mask, targets, m, zeros, zeros, zeros


@triton.jit
def _store_partials(partials_ptr, split, rows, row_mask, total_rows, m, s, t, e):
    base = partials_ptr + split.to(tl.int64) * 4 * total_rows + rows
    tl.store(base, m, mask=row_mask)
    tl.store(base + total_rows, s, mask=row_mask)
    tl.store(base + 2 * total_rows, t, mask=row_mask)
    tl.store(base + 3 * total_rows, e, mask=row_mask)


@triton.jit
def vocab_partials_kernel(
    hidden_ptr,
    teacher_ptr,
    weight_ptr,
    targets_ptr,
    partials_ptr,
    N,
    V,
    D,
    stride_h,
    stride_w,
    total_rows,
    vocab_tiles,
    tiles_per_split,
    inv_temperature,
    HAS_TEACHER: tl.constexpr,
    WITH_ENTROPY: tl.constexpr,
    UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    split = tl.program_id(1)
    rows, row_mask, targets, m, s, t, e = _row_block_start(targets_ptr, N, BLOCK_M)
    m_t, s_t, t_t, e_t = m, s, t, e

    first_tile = split * tiles_per_split
    for tile in range(first_tile, tl.minimum(first_tile + tiles_per_split, vocab_tiles)):
        cols = block_offsets(tile, BLOCK_V)
        col_mask = cols < V
        acc = tl.zeros((BLOCK_M, BLOCK_V), tl.float32)
        acc_t = tl.zeros((BLOCK_M, BLOCK_V), tl.float32)
        for k in range(0, D, BLOCK_D):
            ks = k + tl.arange(0, BLOCK_D)
            k_mask = ks < D
            w = _load_tile(weight_ptr, cols, col_mask, ks, k_mask, stride_w, UPCAST)
            h = _load_tile(hidden_ptr, rows, row_mask, ks, k_mask, stride_h, UPCAST)
            acc = tl.dot(h, tl.trans(w), acc, input_precision=DOT_PRECISION)
            if HAS_TEACHER:  # the teacher rows reuse the loaded weight tile
                h_t = _load_tile(teacher_ptr, rows, row_mask, ks, k_mask, stride_h, UPCAST)
                acc_t = tl.dot(h_t, tl.trans(w), acc_t, input_precision=DOT_PRECISION)
        m, s, t, e = _fold_tile(acc * inv_temperature, cols, col_mask, targets, m, s, t, e, WITH_ENTROPY)
        if HAS_TEACHER:
            m_t, s_t, t_t, e_t = _fold_tile(
                acc_t * inv_temperature, cols, col_mask, targets, m_t, s_t, t_t, e_t, WITH_ENTROPY
            )

    _store_partials(partials_ptr, split, rows, row_mask, total_rows, m, s, t, e)
    if HAS_TEACHER:
        _store_partials(partials_ptr, split, rows + N, row_mask, total_rows, m_t, s_t, t_t, e_t)


@triton.jit
def logit_grad_kernel(
    hidden_ptr,
    weight_ptr,
    targets_ptr,
    lse_ptr,
    logp_coef_ptr,
    entropy_coef_ptr,
    mean_logit_ptr,
    out_ptr,
    N,
    V,
    D,
    stride_h,
    stride_w,
    vocab_tiles,
    inv_temperature,
    WITH_ENTROPY: tl.constexpr,
    UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """out[r, j] = a_r ([j == y_r] - p_rj) - b_r p_rj (z_rj - mean_logit_r) for one tile."""
    pid = tl.program_id(0)
    rows = block_offsets(pid // vocab_tiles, BLOCK_M)
    cols = block_offsets(pid % vocab_tiles, BLOCK_V)
    row_mask = rows < N
    col_mask = cols < V
    acc = tl.zeros((BLOCK_M, BLOCK_V), tl.float32)
    for k in range(0, D, BLOCK_D):
        ks = k + tl.arange(0, BLOCK_D)
        k_mask = ks < D
        h = _load_tile(hidden_ptr, rows, row_mask, ks, k_mask, stride_h, UPCAST)
        w = _load_tile(weight_ptr, cols, col_mask, ks, k_mask, stride_w, UPCAST)
        acc = tl.dot(h, tl.trans(w), acc, input_precision=DOT_PRECISION)
    z = acc * inv_temperature
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
    a = tl.load(logp_coef_ptr + rows, mask=row_mask, other=0.0)
    targets = tl.load(targets_ptr + rows, mask=row_mask, other=-1)
    p = tl.exp(z - lse[:, None])
    if WITH_ENTROPY:
        b = tl.load(entropy_coef_ptr + rows, mask=row_mask, other=0.0)
        c = tl.load(mean_logit_ptr + rows, mask=row_mask, other=0.0)
        grad = -p * (a[:, None] + b[:, None] * (z - c[:, None]))
    else:
        grad = -p * a[:, None]
    grad += tl.where(cols[None, :] == targets[:, None], a[:, None], 0.0)
    out = out_ptr + rows[:, None] * V + cols[None, :]
    tl.store(out, grad.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


@triton.jit
def softmax_epilogue_kernel(
    z_ptr,
    targets_ptr,
    partials_ptr,
    p_ptr,
    N,
    V,
    stride_z,
    stride_p,
    total_rows,
    row_offset,
    WITH_ENTROPY: tl.constexpr,
    WRITE_P: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """The "gemm" backend's epilogue over a [N, V] chunk of z = logits / T that cuBLAS wrote: the
    row statistics (one vocabulary range, rows row_offset + [0, N) of the partials) in one read of z,
    and with WRITE_P a second read that writes p = exp(z - max) for the expected-weight GEMM."""
    rows, row_mask, targets, m, s, t, e = _row_block_start(targets_ptr, N, BLOCK_M)
    for tile in range(0, tl.cdiv(V, BLOCK_V)):
        cols = tile * BLOCK_V + tl.arange(0, BLOCK_V)  # < V < 2^31; rows carry the int64
        col_mask = cols < V
        mask = row_mask[:, None] & col_mask[None, :]
        # rows past N read 0 (finite: no inf - inf); _fold_tile masks the columns past V
        z = tl.load(z_ptr + rows[:, None] * stride_z + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        m, s, t, e = _fold_tile(z, cols, col_mask, targets, m, s, t, e, WITH_ENTROPY)
    base = partials_ptr + rows + row_offset  # the single range's partials [4, total_rows]
    tl.store(base, m, mask=row_mask)
    tl.store(base + total_rows, s, mask=row_mask)
    tl.store(base + 2 * total_rows, t, mask=row_mask)
    tl.store(base + 3 * total_rows, e, mask=row_mask)
    if WRITE_P:
        for tile in range(0, tl.cdiv(V, BLOCK_V)):
            cols = tile * BLOCK_V + tl.arange(0, BLOCK_V)  # < V < 2^31; rows carry the int64
            mask = row_mask[:, None] & (cols < V)[None, :]
            z = tl.load(z_ptr + rows[:, None] * stride_z + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            p = tl.where(mask, tl.exp(z - m[:, None]), 0.0)
            tl.store(p_ptr + rows[:, None] * stride_p + cols[None, :], p.to(p_ptr.dtype.element_ty), mask=mask)
