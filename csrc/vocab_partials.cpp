// Forward: per-row softmax statistics of z = (hidden @ weight^T) * inv_temperature without ever
// holding more than one [rows, kVocabTile] logits tile per thread. Work items are (vocabulary
// range, row block) pairs; each writes partial statistics for its range, merged afterwards in a
// fixed order (coars_fast.kernels.merge), so results do not depend on scheduling.
//
// partials[s, :, r] for vocabulary range s and row r (student rows, then teacher rows when given):
//   0: m   = max_j z_rj                      2: z_r,target (0 when the target is not in the range)
//   1: sum = sum_j exp(z_rj - m)             3: sum_j exp(z_rj - m) * (z_rj - m)   (entropy only)
// weight_partials[s, r, :] = sum_j exp(z_rj - m) * weight_j for student rows: the softmax-weighted weight
// rows that d logp / d hidden needs, accumulated with the flash-attention rescaling trick.
#include <omp.h>

#include <vector>

#include "ops.h"
#include "tiles.h"

namespace coars_fast {
namespace {

template <typename scalar_t>
struct RowStats {
  std::vector<scalar_t> max, sum, target, entropy;
  explicit RowStats(int64_t rows) : max(rows), sum(rows), target(rows), entropy(rows) {}
  void reset(int64_t rows) {
    std::fill_n(max.begin(), rows, -std::numeric_limits<scalar_t>::infinity());
    std::fill_n(sum.begin(), rows, scalar_t(0));
    std::fill_n(target.begin(), rows, scalar_t(0));
    std::fill_n(entropy.begin(), rows, scalar_t(0));
  }
};

// Folds one logits row (length n, vocabulary offset v0) into the running statistics of row r.
// With `store`, the row becomes exp(z - new max), ready for the expected-weight GEMM; returns the
// factor by which that row's accumulator must be rescaled.
template <typename scalar_t>
scalar_t fold_row(scalar_t* z, int64_t n, int64_t v0, int64_t target, bool store, bool entropy,
                  RowStats<scalar_t>& st, int64_t r) {
  if (target >= v0 && target < v0 + n) st.target[r] = z[target - v0];
  const scalar_t old_max = st.max[r];
  const scalar_t new_max = std::max(old_max, row_max(z, n));
  ShiftedExpSums<scalar_t> sums;
  if (store) {
    sums = entropy ? shifted_exp_row<true, true>(z, n, new_max)
                   : shifted_exp_row<true, false>(z, n, new_max);
  } else {
    sums = entropy ? shifted_exp_row<false, true>(z, n, new_max)
                   : shifted_exp_row<false, false>(z, n, new_max);
  }
  const scalar_t scale = std::exp(old_max - new_max);  // 0 on the first tile (old_max = -inf)
  if (entropy) {
    const scalar_t carried =
        st.sum[r] > 0 ? scale * (st.entropy[r] + (old_max - new_max) * st.sum[r]) : scalar_t(0);
    st.entropy[r] = carried + sums.weighted;
  }
  st.sum[r] = st.sum[r] * scale + sums.sum;
  st.max[r] = new_max;
  return scale;
}

template <typename scalar_t>
void vocab_partials_impl(const at::Tensor& hidden, const at::Tensor* teacher_hidden,
                         const at::Tensor& weight, const at::Tensor& targets, scalar_t alpha,
                         bool with_entropy, at::Tensor& partials, at::Tensor* weight_partials) {
  const int64_t N = hidden.size(0), D = hidden.size(1), V = weight.size(0);
  const int64_t splits = partials.size(0), row_sets = teacher_hidden ? 2 : 1;
  const int64_t row_block = std::min(kRowBlock, N);
  const int64_t row_blocks = ceil_div(N, row_block);
  const int64_t vocab_tiles = ceil_div(V, kVocabTile);
  const int64_t tiles_per_split = ceil_div(vocab_tiles, splits);
  const int64_t* y = targets.const_data_ptr<int64_t>();
  scalar_t* partials_ptr = partials.data_ptr<scalar_t>();

  const int64_t gemms_per_tile = row_sets + (weight_partials ? 1 : 0);
#pragma omp parallel num_threads(threads_for(gemms_per_tile * N * V * D))
  {
    std::vector<scalar_t> logits(row_sets * row_block * kVocabTile);
    std::vector<scalar_t> student_rows(needs_staging(hidden) ? row_block * D : 0);
    std::vector<scalar_t> teacher_rows(teacher_hidden && needs_staging(hidden) ? row_block * D : 0);
    std::vector<scalar_t> weight_tile(needs_staging(weight) ? kVocabTile * D : 0);
    RowStats<scalar_t> st(row_sets * row_block);

#pragma omp for schedule(static)
    for (int64_t item = 0; item < splits * row_blocks; ++item) {
      const int64_t split = item / row_blocks;
      const int64_t r0 = (item % row_blocks) * row_block;
      const int64_t rows = std::min(row_block, N - r0);
      const int64_t all_rows = row_sets * rows;
      const scalar_t* hs = rows_as(hidden, r0, rows, student_rows.data());
      const scalar_t* ht =
          teacher_hidden ? rows_as(*teacher_hidden, r0, rows, teacher_rows.data()) : nullptr;
      scalar_t* acc = weight_partials ? weight_partials->data_ptr<scalar_t>() + (split * N + r0) * D : nullptr;
      st.reset(all_rows);

      const int64_t tile_end = std::min(vocab_tiles, (split + 1) * tiles_per_split);
      for (int64_t tile = split * tiles_per_split; tile < tile_end; ++tile) {
        const int64_t v0 = tile * kVocabTile;
        const int64_t vt = std::min(kVocabTile, V - v0);
        const scalar_t* w = rows_as(weight, v0, vt, weight_tile.data());
        // Student and teacher rows both use the weight tile while it is hot.
        gemm_a_bt<scalar_t>(rows, vt, D, alpha, hs, D, w, D, 0, logits.data(), kVocabTile);
        if (ht) {
          gemm_a_bt<scalar_t>(rows, vt, D, alpha, ht, D, w, D, 0,
                              logits.data() + rows * kVocabTile, kVocabTile);
        }
        for (int64_t r = 0; r < all_rows; ++r) {
          const bool store = acc && r < rows;
          const scalar_t scale = fold_row(logits.data() + r * kVocabTile, vt, v0,
                                          y[r0 + r % rows], store, with_entropy, st, r);
          if (store && scale != scalar_t(1)) {
            scalar_t* acc_row = acc + r * D;
            for (int64_t d = 0; d < D; ++d) acc_row[d] *= scale;
          }
        }
        if (acc) gemm_a_b<scalar_t>(rows, D, vt, 1, logits.data(), kVocabTile, w, D, 1, acc, D);
      }

      const int64_t R = row_sets * N;
      for (int64_t r = 0; r < all_rows; ++r) {
        const int64_t row = r < rows ? r0 + r : N + r0 + (r - rows);  // teachers follow students
        scalar_t* out = partials_ptr + split * 4 * R + row;
        out[0] = st.max[r];
        out[R] = st.sum[r];
        out[2 * R] = st.target[r];
        out[3 * R] = st.entropy[r];
      }
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> vocab_partials(const at::Tensor& hidden,
                                                  const std::optional<at::Tensor>& teacher_hidden,
                                                  const at::Tensor& weight, const at::Tensor& targets,
                                                  double inv_temperature, bool with_entropy,
                                                  bool with_expected_weight) {
  check_rows_and_weight(hidden, weight, targets);
  const at::Tensor* teacher =
      teacher_hidden.has_value() && teacher_hidden->defined() ? &*teacher_hidden : nullptr;
  if (teacher) {
    TORCH_CHECK(teacher->sizes() == hidden.sizes() && teacher->is_contiguous() &&
                    teacher->scalar_type() == hidden.scalar_type() && teacher->device().is_cpu(),
                "coars_fast: teacher_hidden must match hidden");
  }
  const int64_t N = hidden.size(0), D = hidden.size(1), V = weight.size(0);
  TORCH_CHECK(V > 0, "coars_fast: empty vocabulary");
  // Enough work items to keep every thread busy even for a handful of rows; every vocabulary
  // range holds at least one tile (the merge needs a finite max per range).
  const int64_t row_blocks = ceil_div(N, std::max<int64_t>(1, std::min(kRowBlock, N)));
  const int64_t vocab_tiles = ceil_div(V, kVocabTile);
  const int64_t wanted_splits = std::clamp<int64_t>(
      ceil_div(4 * at::get_num_threads(), std::max<int64_t>(row_blocks, 1)), 1, vocab_tiles);
  const int64_t splits = ceil_div(vocab_tiles, ceil_div(vocab_tiles, wanted_splits));

  auto options = hidden.options().dtype(compute_type(hidden));
  at::Tensor partials = at::empty({splits, 4, (teacher ? 2 : 1) * N}, options);
  at::Tensor weight_partials = at::zeros({with_expected_weight ? splits : 0, N, D}, options);
  if (N == 0) return {partials, weight_partials};
  at::Tensor* weight_partials_out = with_expected_weight ? &weight_partials : nullptr;
  if (compute_type(hidden) == at::kDouble) {
    vocab_partials_impl<double>(hidden, teacher, weight, targets, inv_temperature, with_entropy,
                                partials, weight_partials_out);
  } else {
    vocab_partials_impl<float>(hidden, teacher, weight, targets, static_cast<float>(inv_temperature),
                               with_entropy, partials, weight_partials_out);
  }
  return {partials, weight_partials};
}

}  // namespace coars_fast
