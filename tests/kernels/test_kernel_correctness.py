"""Every backend against coars_fast.kernels.reference on fresh random inputs: forward and backward,
fp32 and bf16, odd vocabularies, ignored rows, temperature != 1, entropy, the PPO surrogate, N = 0.

Also run by test_kernel_triton_interpreter.py with TRITON_INTERPRET=1, where the backend is Triton.
"""

import pytest
import torch
from kernel_helpers import IGNORE, as_float64, assert_close, backend, device_for, errors, gen, random_problem  # noqa: F401 (pytest fixtures)

from coars_fast.kernels import coars_loss, reference, teacher_student_logprobs, token_logprobs

FP32_TOL = 1e-5
# (N, D, V, temperature): V is never a multiple of a tile (C++ 256, Triton 64 interpreted, 128/256 on
# CUDA) and spans several tiles and vocabulary ranges; N spans several row blocks (C++ 128, Triton 32
# interpreted; on CUDA's 64-256-row blocks the bench shapes cover many) with a partial one.
SHAPES = [(37, 24, 301, 0.7), (130, 48, 1031, 1.3)]


def _grads(output_sum, tensors):
    return torch.autograd.grad(output_sum, [t for t in tensors if t.requires_grad])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-D{}-V{}-T{}".format(*s))
@pytest.mark.parametrize("frozen_head", [True, False], ids=["frozen-head", "trained-head"])
@pytest.mark.parametrize("with_entropy", [False, True], ids=["logp", "logp+entropy"])
def test_token_logprobs_fp32(backend, gen, shape, frozen_head, with_entropy):
    n, d, vocab, temperature = shape
    p = random_problem(gen, n, d, vocab, device=device_for(backend))
    hidden = p["hidden"].requires_grad_()
    weight = p["weight"].requires_grad_(not frozen_head)
    ref = as_float64(p)
    ref_hidden = ref["hidden"].requires_grad_()
    ref_weight = ref["weight"].requires_grad_(not frozen_head)
    grad_logp = torch.randn(n, generator=gen).to(hidden.device)
    grad_entropy = torch.randn(n, generator=gen).to(hidden.device)

    ours = token_logprobs(hidden, weight, p["targets"], temperature=temperature, return_entropy=with_entropy)
    want = reference.token_logprobs(
        ref_hidden, ref_weight, p["targets"], temperature=temperature, return_entropy=with_entropy
    )
    if with_entropy:
        (logp, entropy), (ref_logp, ref_entropy) = ours, want
        assert_close(entropy, ref_entropy, FP32_TOL, "entropy")
        objective = logp @ grad_logp + entropy @ grad_entropy
        ref_objective = ref_logp @ grad_logp.double() + ref_entropy @ grad_entropy.double()
    else:
        logp, ref_logp = ours, want
        objective, ref_objective = logp @ grad_logp, ref_logp @ grad_logp.double()
    assert logp.dtype == torch.float32
    assert_close(logp, ref_logp, FP32_TOL, "logp")
    assert bool((logp <= 0).all()), f"positive log-prob: max {logp.max().item()}"

    ignored = p["targets"] == IGNORE
    assert bool((logp[ignored] == 0).all())
    grads = _grads(objective, [hidden, weight])
    ref_grads = _grads(ref_objective, [ref_hidden, ref_weight])
    for name, got, want_grad in zip(["d hidden", "d weight"], grads, ref_grads):
        assert got.dtype == torch.float32
        assert_close(got, want_grad, FP32_TOL, name)
    assert bool((grads[0][ignored] == 0).all()), "ignored rows must get no gradient"


@pytest.mark.parametrize("frozen_head", [True, False], ids=["frozen-head", "trained-head"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_no_worse_than_naive(backend, gen, frozen_head, dtype):
    """bf16/fp16 inputs: our error against fp64 (on the same rounded values) must not exceed that
    of the naive half-precision path (half logits, fp32 log_softmax, autograd)."""
    n, d, vocab, temperature = SHAPES[-1]
    p = random_problem(gen, n, d, vocab, dtype=dtype, device=device_for(backend))
    targets = p["targets"]
    grad_logp = torch.randn(n, generator=gen).to(targets.device)

    def run(fn, hidden, weight):
        hidden = hidden.detach().requires_grad_()
        weight = weight.detach().requires_grad_(not frozen_head)
        logp = fn(hidden, weight)
        return [logp.double()] + [g.double() for g in _grads(logp.float() @ grad_logp, [hidden, weight])]

    def naive(hidden, weight):
        logits = (hidden @ weight.t()) / temperature  # half precision, as such a model produces them
        logp = logits.float().log_softmax(-1).gather(1, targets.clamp(min=0)[:, None]).squeeze(1)
        return logp.masked_fill(targets == IGNORE, 0)

    exact = run(
        lambda h, w: reference.token_logprobs(h, w, targets, temperature=temperature),
        p["hidden"].double(),
        p["weight"].double(),
    )
    ours = run(lambda h, w: token_logprobs(h, w, targets, temperature=temperature), p["hidden"], p["weight"])
    baseline = run(naive, p["hidden"], p["weight"])
    for name, got, base, want in zip(["logp", "d hidden", "d weight"], ours, baseline, exact):
        (ours_max, ours_rel), (naive_max, naive_rel) = errors(got, want), errors(base, want)
        print(f"{name}: ours max|a-b| {ours_max:.2e} rel {ours_rel:.2e}; naive {naive_max:.2e} {naive_rel:.2e}")
        assert ours_rel <= naive_rel, f"{name}: ours rel {ours_rel:.3e} worse than naive {naive_rel:.3e}"


def test_teacher_student_logprobs(backend, gen):
    n, d, vocab, temperature = SHAPES[-1]
    p = random_problem(gen, n, d, vocab, device=device_for(backend))
    hidden = p["hidden"].requires_grad_()
    teacher = p["teacher_hidden"].requires_grad_()  # the teacher must still get no gradient
    weight = p["weight"].requires_grad_()
    ref = as_float64(p)
    ref_hidden, ref_weight = ref["hidden"].requires_grad_(), ref["weight"].requires_grad_()

    logp_s, logp_t = teacher_student_logprobs(hidden, teacher, weight, p["targets"], temperature=temperature)
    ref_s, ref_t = reference.teacher_student_logprobs(
        ref_hidden, ref["teacher_hidden"], ref_weight, p["targets"], temperature=temperature
    )
    assert_close(logp_s, ref_s, FP32_TOL, "logp student")
    assert_close(logp_t, ref_t, FP32_TOL, "logp teacher")
    assert not logp_t.requires_grad
    assert bool((logp_s <= 0).all() and (logp_t <= 0).all())

    (logp_s * logp_t.exp()).sum().backward()
    (ref_s * ref_t.exp()).sum().backward()
    assert teacher.grad is None, "the teacher must get no gradient"
    assert_close(hidden.grad, ref_hidden.grad, FP32_TOL, "d student hidden")
    assert_close(weight.grad, ref_weight.grad, FP32_TOL, "d weight (student rows only)")


@pytest.mark.parametrize("ppo", [False, True], ids=["reinforce", "ppo-clip"])
@pytest.mark.parametrize("frozen_head", [True, False], ids=["frozen-head", "trained-head"])
def test_coars_loss(backend, gen, ppo, frozen_head):
    n, d, vocab, temperature = SHAPES[-1]
    p = random_problem(gen, n, d, vocab, device=device_for(backend))
    ref = as_float64(p)
    extra = {}
    if ppo:  # old log-probs near the current ones, so some ratios fall inside the clip and some outside
        logp_now = reference.token_logprobs(ref["hidden"], ref["weight"], p["targets"], temperature=temperature)
        noise = 0.3 * torch.randn(n, generator=gen, dtype=torch.float64).to(logp_now.device)
        extra = dict(old_logprobs=(logp_now + noise).float(), ppo_clip=0.2)
    hidden, weight = p["hidden"].requires_grad_(), p["weight"].requires_grad_(not frozen_head)
    ref_hidden, ref_weight = ref["hidden"].requires_grad_(), ref["weight"].requires_grad_(not frozen_head)
    kwargs = dict(distill_coef=0.3, credit_clip=0.5, temperature=temperature, return_entropy=True)

    loss, stats = coars_loss(
        hidden, p["teacher_hidden"], weight, p["targets"], p["rewards"], p["token_weights"], **kwargs, **extra
    )
    ref_extra = {k: v.double() if torch.is_tensor(v) else v for k, v in extra.items()}
    ref_loss, ref_stats = reference.coars_loss(
        ref_hidden,
        ref["teacher_hidden"],
        ref_weight,
        p["targets"],
        ref["rewards"],
        ref["token_weights"],
        **kwargs,
        **ref_extra,
    )
    # The loss is a signed sum whose terms can cancel: its error is judged against the size of the
    # terms (sum of |w * (r + lambda A)|), not against a total that may be near zero.
    kept = (p["targets"] != IGNORE).to(ref["rewards"].device)
    terms = (ref["token_weights"] * (ref["rewards"] + 0.3 * ref_stats["credit"]))[kept].abs().sum()
    loss_error = abs(loss.item() - ref_loss.item()) / max(abs(ref_loss.item()), terms.item())
    assert loss_error <= FP32_TOL, f"loss: |a-b| / max(|b|, sum of |terms|) = {loss_error:.3e} > {FP32_TOL:.0e}"
    for key in ("logp_student", "logp_teacher", "credit", "entropy"):
        assert not stats[key].requires_grad
        assert_close(stats[key], ref_stats[key], FP32_TOL, key)
    assert float(stats["credit"].abs().max()) <= 0.5 + 1e-6

    loss.backward()
    ref_loss.backward()
    assert_close(hidden.grad, ref_hidden.grad, FP32_TOL, "d student hidden")
    if not frozen_head:
        assert_close(weight.grad, ref_weight.grad, FP32_TOL, "d weight")
    assert bool((hidden.grad[p["targets"] == IGNORE] == 0).all())


def test_strided_rows_and_int32_targets(backend, gen):
    """Hidden rows picked out of a larger [B, T, D] activation (non-contiguous), int32 targets."""
    n, d, vocab, temperature = SHAPES[0]
    p = random_problem(gen, 2 * n, d, vocab, device=device_for(backend))
    hidden = p["hidden"][::2]
    targets = p["targets"][::2].to(torch.int32)
    assert not hidden.is_contiguous()
    logp = token_logprobs(hidden, p["weight"], targets, temperature=temperature)
    want = reference.token_logprobs(hidden.double(), p["weight"].double(), targets.long(), temperature=temperature)
    assert_close(logp, want, FP32_TOL, "logp")


def test_zero_rows(backend):
    device = device_for(backend)
    hidden = torch.randn(0, 8, device=device, requires_grad=True)
    weight = torch.randn(19, 8, device=device, requires_grad=True)
    targets = torch.empty(0, dtype=torch.long, device=device)
    logp, entropy = token_logprobs(hidden, weight, targets, return_entropy=True)
    assert logp.shape == entropy.shape == (0,)
    empty = torch.empty(0, device=device)
    loss, stats = coars_loss(hidden, hidden.detach(), weight, targets, empty, empty)
    assert loss.item() == 0.0 and stats["credit"].shape == (0,)
    loss.backward()
    assert hidden.grad.shape == (0, 8) and bool((weight.grad == 0).all())


def test_all_rows_ignored(backend, gen):
    n, d, vocab, _ = SHAPES[0]
    p = random_problem(gen, n, d, vocab, device=device_for(backend))
    targets = torch.full_like(p["targets"], IGNORE)
    hidden, weight = p["hidden"].requires_grad_(), p["weight"].requires_grad_()
    loss, stats = coars_loss(
        hidden, p["teacher_hidden"], weight, targets, p["rewards"], p["token_weights"], return_entropy=True
    )
    assert loss.item() == 0.0
    assert all(bool((v == 0).all()) for v in stats.values())
    loss.backward()
    assert bool((hidden.grad == 0).all()) and bool((weight.grad == 0).all())


def test_deterministic(backend, gen):
    """Same inputs, same bits: fixed reduction orders, no atomics."""
    n, d, vocab, temperature = SHAPES[-1]
    p = random_problem(gen, n, d, vocab, device=device_for(backend))
    runs = []
    for _ in range(2):
        hidden, weight = p["hidden"].clone().requires_grad_(), p["weight"].clone().requires_grad_()
        loss, stats = coars_loss(
            hidden, p["teacher_hidden"], weight, p["targets"], p["rewards"], p["token_weights"], temperature=temperature
        )
        loss.backward()
        runs.append([loss, stats["logp_student"], hidden.grad, weight.grad])
    for first, second in zip(*runs):
        assert torch.equal(first, second)


def test_expected_weight_pass_only_when_the_hidden_gradient_is_needed(backend, gen, monkeypatch):
    """The extra weight pass that stores d logp / d hidden runs only for a frozen head whose
    hidden states need a gradient (never for the teacher, torch.no_grad, or a trained head)."""
    from coars_fast.kernels.backends import backend_module

    module = backend_module(backend)
    calls = []
    original = module.vocab_partials

    def spy(*args):
        calls.append(args[-1])  # with_expected_weight
        return original(*args)

    monkeypatch.setattr(module, "vocab_partials", spy)
    n, d, vocab, _ = SHAPES[0]
    p = random_problem(gen, n, d, vocab, device=device_for(backend))
    hidden = p["hidden"].requires_grad_()
    with torch.no_grad():
        teacher_student_logprobs(hidden, p["teacher_hidden"], p["weight"], p["targets"])
    teacher_student_logprobs(hidden, p["teacher_hidden"], p["weight"], p["targets"])
    teacher_student_logprobs(hidden, p["teacher_hidden"], p["weight"].requires_grad_(), p["targets"])
    assert calls == [False, module.ACCUMULATES_EXPECTED_WEIGHT, False]
