"""float64 torch.autograd.gradcheck of the fused ops on the CPU backends (C++ and torch), through
both backward strategies: the expected weight held from the forward (frozen head) and the streaming one."""

import pytest
import torch
from kernel_helpers import IGNORE, backend, gen, random_problem  # noqa: F401 (pytest fixtures)

from coars_fast.kernels import coars_loss, teacher_student_logprobs, token_logprobs

N, D, V = 6, 5, 13


@pytest.fixture
def problem(backend, gen):
    if backend in ("triton", "gemm"):
        pytest.skip("the Triton kernels compute in fp32; gradcheck needs float64")
    return random_problem(gen, N, D, V, dtype=torch.float64, ignored_every=4)


@pytest.mark.parametrize("frozen_head", [True, False], ids=["frozen-head", "trained-head"])
def test_token_logprobs_gradcheck(problem, frozen_head):
    targets = problem["targets"]
    hidden = problem["hidden"].requires_grad_()
    weight = problem["weight"].requires_grad_(not frozen_head)

    def logp_only(h, w):
        return token_logprobs(h, w, targets, temperature=0.8)

    def with_entropy(h, w):
        return token_logprobs(h, w, targets, temperature=0.8, return_entropy=True)

    assert torch.autograd.gradcheck(logp_only, (hidden, weight))
    assert torch.autograd.gradcheck(with_entropy, (hidden, weight))


def test_teacher_student_gradcheck(problem):
    targets, teacher = problem["targets"], problem["teacher_hidden"]
    hidden, weight = problem["hidden"].requires_grad_(), problem["weight"].requires_grad_()
    assert torch.autograd.gradcheck(
        lambda h, w: teacher_student_logprobs(h, teacher, w, targets, temperature=1.3)[0], (hidden, weight)
    )


@pytest.mark.parametrize("ppo", [False, True], ids=["reinforce", "ppo-clip"])
def test_coars_loss_gradcheck(problem, gen, ppo):
    p = problem
    extra = {}
    if ppo:
        with torch.no_grad():
            logp = token_logprobs(p["hidden"], p["weight"], p["targets"])
        # Ratios away from the clip edges, where the surrogate is not differentiable.
        offsets = torch.tensor([0.5, -0.5, 0.05, -0.05, 0.6, 0.0], dtype=torch.float64)
        extra = dict(old_logprobs=logp + offsets, ppo_clip=0.2)
    assert p["targets"][0] == IGNORE
    hidden, weight = p["hidden"].requires_grad_(), p["weight"].requires_grad_()

    # distill_coef=0: the credit A is a stop-gradient by design, so finite differences through it
    # would not match; its effect on the gradient is checked in test_kernel_objective.py.
    def loss(h, w):
        return coars_loss(
            h,
            p["teacher_hidden"],
            w,
            p["targets"],
            p["rewards"],
            p["token_weights"],
            distill_coef=0.0,
            temperature=0.9,
            **extra,
        )[0]

    assert torch.autograd.gradcheck(loss, (hidden, weight))
