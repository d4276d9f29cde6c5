// Registers the CPU kernels as torch custom ops: torch.ops.coars_fast.vocab_partials and
// torch.ops.coars_fast.logit_grad. The library carries no Python module; Python loads it with
// torch.ops.load_library (coars_fast/kernels/backend_cpu.py).
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(coars_fast, m) {
  m.def(
      "vocab_partials(Tensor hidden, Tensor? teacher_hidden, Tensor weight, Tensor targets, "
      "float inv_temperature, bool with_entropy, bool with_expected_weight) -> (Tensor, Tensor)");
  m.def(
      "logit_grad(Tensor hidden, Tensor weight, Tensor targets, Tensor lse, Tensor logp_coef, "
      "Tensor? entropy_coef, Tensor? mean_logit, float inv_temperature) -> Tensor");
}

TORCH_LIBRARY_IMPL(coars_fast, CPU, m) {
  m.impl("vocab_partials", &coars_fast::vocab_partials);
  m.impl("logit_grad", &coars_fast::logit_grad);
}
