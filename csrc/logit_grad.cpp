// Backward: the gradient of sum_r (a_r * logp_r + b_r * entropy_r) w.r.t. the raw logits of a row
// chunk, dlogits[r, j] = a_r * ([j == y_r] - p_rj) - b_r * p_rj * (z_rj - mean_logit_r), with p and
// z recomputed tile by tile (a and b already include the 1/temperature of z = logits / T). The
// caller turns it into dhidden = dlogits @ weight and dweight = dlogits^T @ hidden with plain GEMMs
// over the bounded [rows, V] chunk, so hidden and weight come in the compute dtype (float32 or
// float64) that those GEMMs use. Each (row block, vocabulary tile) item owns its output tile.
#include <omp.h>

#include "ops.h"
#include "tiles.h"

namespace coars_fast {
namespace {

template <typename scalar_t>
void logit_grad_impl(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                     const at::Tensor& lse, const at::Tensor& logp_coef,
                     const at::Tensor* entropy_coef, const at::Tensor* mean_logit, scalar_t alpha,
                     at::Tensor& dlogits) {
  const int64_t N = hidden.size(0), D = hidden.size(1), V = weight.size(0);
  const int64_t row_block = std::min(kRowBlock, N);
  const int64_t row_blocks = ceil_div(N, row_block);
  const int64_t vocab_tiles = ceil_div(V, kVocabTile);
  const int64_t* y = targets.const_data_ptr<int64_t>();
  const scalar_t* lse_ptr = lse.const_data_ptr<scalar_t>();
  const scalar_t* a = logp_coef.const_data_ptr<scalar_t>();
  const scalar_t* b = entropy_coef ? entropy_coef->const_data_ptr<scalar_t>() : nullptr;
  const scalar_t* c = mean_logit ? mean_logit->const_data_ptr<scalar_t>() : nullptr;
  scalar_t* out = dlogits.data_ptr<scalar_t>();

#pragma omp parallel num_threads(threads_for(N * V * D))
  {
#pragma omp for schedule(static)
    for (int64_t item = 0; item < row_blocks * vocab_tiles; ++item) {
      const int64_t r0 = (item / vocab_tiles) * row_block;
      const int64_t rows = std::min(row_block, N - r0);
      const int64_t v0 = (item % vocab_tiles) * kVocabTile;
      const int64_t vt = std::min(kVocabTile, V - v0);
      const scalar_t* h = hidden.const_data_ptr<scalar_t>() + r0 * D;
      const scalar_t* w = weight.const_data_ptr<scalar_t>() + v0 * D;
      scalar_t* tile = out + r0 * V + v0;
      gemm_a_bt<scalar_t>(rows, vt, D, alpha, h, D, w, D, 0, tile, V);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = r0 + r;
        scalar_t* z = tile + r * V;
        softmax_grad_row(z, vt, lse_ptr[row], a[row], b ? b[row] : scalar_t(0), c ? c[row] : scalar_t(0));
        if (y[row] >= v0 && y[row] < v0 + vt) z[y[row] - v0] += a[row];
      }
    }
  }
}

}  // namespace

at::Tensor logit_grad(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                      const at::Tensor& lse, const at::Tensor& logp_coef,
                      const std::optional<at::Tensor>& entropy_coef,
                      const std::optional<at::Tensor>& mean_logit, double inv_temperature) {
  check_rows_and_weight(hidden, weight, targets);
  TORCH_CHECK(hidden.scalar_type() == compute_type(hidden),
              "coars_fast: logit_grad takes float32 or float64 hidden and weight");
  const at::Tensor* b = entropy_coef.has_value() && entropy_coef->defined() ? &*entropy_coef : nullptr;
  const at::Tensor* c = mean_logit.has_value() && mean_logit->defined() ? &*mean_logit : nullptr;
  TORCH_CHECK((b == nullptr) == (c == nullptr),
              "coars_fast: entropy_coef and mean_logit go together");
  check_row_vector(lse, hidden, "lse");
  check_row_vector(logp_coef, hidden, "logp_coef");
  if (b) check_row_vector(*b, hidden, "entropy_coef");
  if (c) check_row_vector(*c, hidden, "mean_logit");

  at::Tensor dlogits =
      at::empty({hidden.size(0), weight.size(0)}, hidden.options().dtype(compute_type(hidden)));
  if (hidden.size(0) == 0) return dlogits;
  if (compute_type(hidden) == at::kDouble) {
    logit_grad_impl<double>(hidden, weight, targets, lse, logp_coef, b, c, inv_temperature, dlogits);
  } else {
    logit_grad_impl<float>(hidden, weight, targets, lse, logp_coef, b, c,
                           static_cast<float>(inv_temperature), dlogits);
  }
  return dlogits;
}

}  // namespace coars_fast
