// ctest: the CPU ops, called through the torch dispatcher, against materialised float64 logits.
// Random inputs, a vocabulary that is not a multiple of the tile, temperature != 1, fp32, bf16 and
// fp64 inputs, one and two threads, N = 0.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdio>
#include <string>

namespace {

int failures = 0;

void expect_close(const at::Tensor& got, const at::Tensor& want, double tol, const std::string& what) {
  const double err = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
  const double scale = std::max(1.0, want.abs().max().item<double>());
  const bool ok = err <= tol * scale;
  std::printf("%-44s max|a-b| = %.3e  %s\n", what.c_str(), err, ok ? "ok" : "FAIL");
  if (!ok) ++failures;
}

std::tuple<at::Tensor, at::Tensor> vocab_partials(const at::Tensor& h, const std::optional<at::Tensor>& th,
                                                  const at::Tensor& w, const at::Tensor& y, double inv_t,
                                                  bool entropy, bool with_expected_weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("coars_fast::vocab_partials", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
                           const at::Tensor&, double, bool, bool)>();
  return op.call(h, th, w, y, inv_t, entropy, with_expected_weight);
}

at::Tensor logit_grad(const at::Tensor& h, const at::Tensor& w, const at::Tensor& y, const at::Tensor& lse,
                      const at::Tensor& a, const std::optional<at::Tensor>& b,
                      const std::optional<at::Tensor>& c, double inv_t) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("coars_fast::logit_grad", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, const at::Tensor&,
                                         const std::optional<at::Tensor>&,
                                         const std::optional<at::Tensor>&, double)>();
  return op.call(h, w, y, lse, a, b, c, inv_t);
}

void check_forward(int64_t N, int64_t D, int64_t V, double temperature, at::ScalarType dtype,
                   double tol, const std::string& label) {
  auto h = at::randn({N, D}).to(dtype);
  auto th = at::randn({N, D}).to(dtype);
  auto w = (at::randn({V, D}) * 0.5).to(dtype);
  auto y = at::randint(V, {N}, at::kLong);
  auto [partials, weight_partials] = vocab_partials(h, th, w, y, 1.0 / temperature, true, true);

  // Merge the vocabulary ranges: lse = logsumexp_s(m_s + log sum_s).
  auto m = partials.select(1, 0), s = partials.select(1, 1), t = partials.select(1, 2), e = partials.select(1, 3);
  auto top = std::get<0>(m.max(0));
  auto scale = (m - top).exp();
  auto total = (s * scale).sum(0);
  auto lse = top + total.log();
  auto entropy = total.log() - ((e + (m - top) * s) * scale).sum(0) / total;
  auto scale_student = (scale.narrow(1, 0, N) / total.narrow(0, 0, N)).unsqueeze(-1);
  auto expected_weight = (weight_partials * scale_student).sum(0);

  // Reference on materialised float64 logits, student rows then teacher rows.
  auto hd = at::cat({h, th}).to(at::kDouble), wd = w.to(at::kDouble);
  auto z = at::mm(hd, wd.t()) / temperature;
  auto yy = at::cat({y, y});
  auto ref_lse = z.logsumexp(1);
  auto logp = z.log_softmax(1);
  auto ref_entropy = -(logp.exp() * logp).sum(1);
  auto ref_target = z.gather(1, yy.unsqueeze(1)).squeeze(1);
  auto ref_expected_weight = at::mm(logp.narrow(0, 0, N).exp(), wd);

  expect_close(lse, ref_lse, tol, label + " lse");
  expect_close(t.sum(0), ref_target, tol, label + " target logit");
  expect_close(entropy, ref_entropy, tol, label + " entropy");
  expect_close(expected_weight, ref_expected_weight, tol, label + " softmax-weighted weight");

  // Backward chunk: a * logp_y + b * entropy, differentiated w.r.t. the raw logits.
  const auto ct = dtype == at::kDouble ? at::kDouble : at::kFloat;
  auto a = at::randn({N}).to(ct), b = at::randn({N}).to(ct);
  auto lse_s = ref_lse.narrow(0, 0, N).to(ct);
  auto mean_logit = (logp.narrow(0, 0, N).exp() * z.narrow(0, 0, N)).sum(1).to(ct);
  // The backward op works in the compute dtype (the caller's GEMMs need it anyway).
  h = h.to(ct);
  w = w.to(ct);
  auto dz = logit_grad(h, w, y, lse_s, a, b, mean_logit, 1.0 / temperature);
  auto p = logp.narrow(0, 0, N).exp();
  auto zs = z.narrow(0, 0, N);
  auto onehot = at::zeros_like(p).scatter_(1, y.unsqueeze(1), 1.0);
  auto ad = a.to(at::kDouble).unsqueeze(1), bd = b.to(at::kDouble).unsqueeze(1);
  auto ref_dz = ad * (onehot - p) - bd * p * (zs - mean_logit.to(at::kDouble).unsqueeze(1));
  auto dz_no_entropy = logit_grad(h, w, y, lse_s, a, std::nullopt, std::nullopt, 1.0 / temperature);
  expect_close(dz, ref_dz, tol, label + " logit grad");
  expect_close(dz_no_entropy, ad * (onehot - p), tol, label + " logit grad, no entropy");
}

}  // namespace

int main() {
  at::manual_seed(0);
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    const std::string tag = " [" + std::to_string(threads) + " thr]";
    check_forward(37, 19, 301, 0.7, at::kFloat, 1e-5, "fp32 N=37 D=19 V=301 T=0.7" + tag);
    check_forward(300, 64, 1031, 1.0, at::kFloat, 1e-5, "fp32 N=300 D=64 V=1031" + tag);
    check_forward(5, 33, 7, 1.3, at::kFloat, 1e-5, "fp32 N=5 D=33 V=7 T=1.3" + tag);
    check_forward(29, 48, 515, 1.0, at::kBFloat16, 1e-4, "bf16 N=29 D=48 V=515" + tag);
    check_forward(17, 24, 263, 0.9, at::kDouble, 1e-12, "fp64 N=17 D=24 V=263 T=0.9" + tag);
  }

  // N = 0: empty outputs, no reads.
  auto w = at::randn({11, 8});
  auto [partials, weight_partials] = vocab_partials(at::empty({0, 8}), std::nullopt, w,
                                          at::empty({0}, at::kLong), 1.0, false, true);
  const bool empty_ok = partials.size(-1) == 0 && weight_partials.size(1) == 0;
  std::printf("%-44s %s\n", "N = 0", empty_ok ? "ok" : "FAIL");
  failures += empty_ok ? 0 : 1;

  std::printf("%s\n", failures == 0 ? "all passed" : "FAILED");
  return failures == 0 ? 0 : 1;
}
