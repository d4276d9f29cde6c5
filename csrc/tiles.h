// Shared pieces of the CPU kernels: tile sizes, row-major GEMM wrappers over ATen (MKL here), fp32
// staging of bf16/fp16 operands, and the vectorised per-row softmax epilogues that run while a
// logits tile is still in cache. Everything is templated on the compute type `scalar_t`: float for
// float32/bfloat16/float16 inputs, double for float64 (used by gradcheck).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace coars_fast {

// A [kRowBlock, kVocabTile] fp32 logits tile (128 KiB) plus a [kVocabTile, D] weight tile stay in
// the per-core L2 (2 MiB here) for D up to ~1k; MKL runs at full speed on these shapes.
constexpr int64_t kRowBlock = 128;
constexpr int64_t kVocabTile = 256;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Threads for a job of `macs` multiply-adds: one per ~4M (about 50 us of GEMM), so that small
// calls do not pay a fork/join (which stalls badly when other processes share the cores).
inline int threads_for(int64_t macs) {
  return static_cast<int>(std::clamp<int64_t>(ceil_div(macs, int64_t{1} << 22), 1, at::get_num_threads()));
}

// A row-major [rows, cols] matrix with leading dimension ld, as a tensor view (no copy).
template <typename scalar_t>
at::Tensor matrix(const scalar_t* data, int64_t rows, int64_t cols, int64_t ld) {
  return at::from_blob(const_cast<scalar_t*>(data), {rows, cols}, {ld, 1},
                       at::dtype(c10::CppTypeToScalarType<scalar_t>::value));
}

// The GEMMs go through ATen (MKL here); called from inside our OpenMP region they run on the
// calling thread, one tile per worker.
// c[M,N] = alpha * a[M,K] @ b[N,K]^T + beta * c, all row-major.
template <typename scalar_t>
void gemm_a_bt(int64_t M, int64_t N, int64_t K, scalar_t alpha, const scalar_t* a, int64_t lda,
               const scalar_t* b, int64_t ldb, scalar_t beta, scalar_t* c, int64_t ldc) {
  at::Tensor out = matrix(c, M, N, ldc);
  at::addmm_out(out, out, matrix(a, M, K, lda), matrix(b, N, K, ldb).t(), beta, alpha);
}

// c[M,N] = alpha * a[M,K] @ b[K,N] + beta * c, all row-major.
template <typename scalar_t>
void gemm_a_b(int64_t M, int64_t N, int64_t K, scalar_t alpha, const scalar_t* a, int64_t lda,
              const scalar_t* b, int64_t ldb, scalar_t beta, scalar_t* c, int64_t ldc) {
  at::Tensor out = matrix(c, M, N, ldc);
  at::addmm_out(out, out, matrix(a, M, K, lda), matrix(b, K, N, ldb), beta, alpha);
}

// Rows [row0, row0 + rows) of a contiguous [*, D] matrix in the compute type: a pointer into `src`
// when it already has that type, else those rows upcast into `scratch` (bf16 GEMMs are ~90x slower
// than fp32 on AVX2 CPUs, so half-precision inputs are widened tile by tile).
template <typename scalar_t>
const scalar_t* rows_as(const at::Tensor& src, int64_t row0, int64_t rows, scalar_t* scratch) {
  const int64_t D = src.size(1);
  switch (src.scalar_type()) {
    case at::kBFloat16:
      at::vec::convert(src.const_data_ptr<at::BFloat16>() + row0 * D, scratch, rows * D);
      return scratch;
    case at::kHalf:
      at::vec::convert(src.const_data_ptr<at::Half>() + row0 * D, scratch, rows * D);
      return scratch;
    default:
      return src.const_data_ptr<scalar_t>() + row0 * D;
  }
}

inline bool needs_staging(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
}

template <typename scalar_t>
scalar_t row_max(const scalar_t* x, int64_t n) {
  using Vec = at::vec::Vectorized<scalar_t>;
  int64_t j = 0;
  scalar_t best = -std::numeric_limits<scalar_t>::infinity();
  if (n >= Vec::size()) {
    Vec acc = Vec::loadu(x);
    for (j = Vec::size(); j + Vec::size() <= n; j += Vec::size()) {
      acc = at::vec::maximum(acc, Vec::loadu(x + j));
    }
    best = at::vec::vec_reduce_all<scalar_t>(
        [](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, acc);
  }
  for (; j < n; ++j) best = std::max(best, x[j]);
  return best;
}

// For one row of z: sum_j exp(z_j - shift) and, when kEntropy, sum_j exp(z_j - shift) * (z_j - shift);
// with kStore the row is overwritten by exp(z_j - shift).
template <typename scalar_t>
struct ShiftedExpSums {
  scalar_t sum = 0;
  scalar_t weighted = 0;
};

template <bool kStore, bool kEntropy, typename scalar_t>
ShiftedExpSums<scalar_t> shifted_exp_row(scalar_t* z, int64_t n, scalar_t shift) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec vshift(shift);
  Vec vsum(0), vweighted(0);
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) {
    const Vec d = Vec::loadu(z + j) - vshift;
    const Vec p = d.exp();
    vsum = vsum + p;
    if constexpr (kEntropy) vweighted = at::vec::fmadd(p, d, vweighted);
    if constexpr (kStore) p.store(z + j);
  }
  auto add = [](Vec& a, Vec& b) { return a + b; };
  ShiftedExpSums<scalar_t> out{at::vec::vec_reduce_all<scalar_t>(add, vsum),
                               kEntropy ? at::vec::vec_reduce_all<scalar_t>(add, vweighted) : 0};
  for (; j < n; ++j) {
    const scalar_t d = z[j] - shift;
    const scalar_t p = std::exp(d);
    out.sum += p;
    if constexpr (kEntropy) out.weighted += p * d;
    if constexpr (kStore) z[j] = p;
  }
  return out;
}

// z_j <- -exp(z_j - lse) * (a + b * (z_j - c)): the gradient of a * logp_y + b * entropy w.r.t.
// the logits without the one-hot term a * [j == y] (added by the caller).
template <typename scalar_t>
void softmax_grad_row(scalar_t* z, int64_t n, scalar_t lse, scalar_t a, scalar_t b, scalar_t c) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec vlse(lse), va(a), vb(b), vc(c);
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) {
    const Vec zj = Vec::loadu(z + j);
    const Vec p = (zj - vlse).exp();
    (Vec(0) - p * at::vec::fmadd(vb, zj - vc, va)).store(z + j);
  }
  for (; j < n; ++j) z[j] = -std::exp(z[j] - lse) * (a + b * (z[j] - c));
}

}  // namespace coars_fast
