// The CPU ops registered as torch.ops.coars_fast.* (see registration.cpp). User-facing validation
// (ValueError naming the argument) lives in coars_fast.kernels.validation; the checks here only
// keep direct calls of the raw ops memory-safe.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace coars_fast {

std::tuple<at::Tensor, at::Tensor> vocab_partials(const at::Tensor& hidden,
                                                  const std::optional<at::Tensor>& teacher_hidden,
                                                  const at::Tensor& weight, const at::Tensor& targets,
                                                  double inv_temperature, bool with_entropy,
                                                  bool with_expected_weight);

at::Tensor logit_grad(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                      const at::Tensor& lse, const at::Tensor& logp_coef,
                      const std::optional<at::Tensor>& entropy_coef,
                      const std::optional<at::Tensor>& mean_logit, double inv_temperature);

// Statistics and gradients are computed in double for float64 inputs, else in float.
inline at::ScalarType compute_type(const at::Tensor& hidden) {
  return hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// hidden [N, D] and weight [V, D]: contiguous CPU tensors of one floating dtype; targets [N] int64.
inline void check_rows_and_weight(const at::Tensor& hidden, const at::Tensor& weight,
                                  const at::Tensor& targets) {
  TORCH_CHECK(hidden.device().is_cpu() && weight.device().is_cpu() && targets.device().is_cpu(),
              "coars_fast: CPU tensors expected");
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.is_contiguous() &&
                  weight.is_contiguous() && hidden.size(1) == weight.size(1),
              "coars_fast: hidden [N, D] and weight [V, D] must be contiguous");
  TORCH_CHECK(hidden.scalar_type() == weight.scalar_type() &&
                  at::isFloatingType(hidden.scalar_type()),
              "coars_fast: hidden and weight must share one floating dtype");
  TORCH_CHECK(targets.scalar_type() == at::kLong && targets.is_contiguous() &&
                  targets.numel() == hidden.size(0),
              "coars_fast: targets must be a contiguous int64 [N] tensor");
}

// A per-row [N] input of the backward op, in the compute type.
inline void check_row_vector(const at::Tensor& t, const at::Tensor& hidden, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == compute_type(hidden) &&
                  t.is_contiguous() && t.dim() == 1 && t.numel() == hidden.size(0),
              "coars_fast: ", name, " must be a contiguous [N] CPU tensor in the compute dtype");
}

}  // namespace coars_fast
