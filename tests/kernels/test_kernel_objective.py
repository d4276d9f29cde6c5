"""The CoARS objective on log-probs (kernels/objective.py), against hand-derived gradients: the
fused op and the reference share it, so it is checked on its own here."""

import torch
from kernel_helpers import gen  # noqa: F401 (pytest fixture)

from coars_fast.kernels.objective import coars_objective


def _setup(gen, n=9):
    logp_s = (-torch.rand(n, generator=gen, dtype=torch.float64) * 5).requires_grad_()
    logp_t = -torch.rand(n, generator=gen, dtype=torch.float64) * 5
    rewards = torch.randn(n, generator=gen, dtype=torch.float64)
    weights = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1
    valid = torch.ones(n, dtype=torch.bool)
    valid[2] = False
    return logp_s, logp_t, rewards, weights, valid


def test_reinforce_gradient_is_minus_weighted_advantage(gen):
    logp_s, logp_t, rewards, weights, valid = _setup(gen)
    rewards[2] = float("nan")  # an ignored row's garbage must not leak into the loss or gradient
    loss, stats = coars_objective(logp_s, logp_t, rewards, weights, valid, distill_coef=0.1, credit_clip=1.0)
    loss.backward()
    credit = (logp_t - logp_s.detach()).clamp(-1, 1).masked_fill(~valid, 0)
    expected = -(weights * (rewards.nan_to_num() + 0.1 * credit)).masked_fill(~valid, 0)
    assert torch.allclose(logp_s.grad, expected)
    assert torch.allclose(stats["credit"], credit)
    assert torch.isfinite(loss) and logp_s.grad[2] == 0


def test_ppo_clip_zeroes_gradient_outside_the_trust_region(gen):
    logp_s, logp_t, rewards, weights, valid = _setup(gen)
    old = logp_s.detach() + torch.tensor([0.5, -0.5, 0.0, 0.01, -0.01, 0.3, -0.3, 0.0, 0.1], dtype=torch.float64)
    loss, _ = coars_objective(
        logp_s, logp_t, rewards, weights, valid, distill_coef=0.1, credit_clip=1.0, old_logprobs=old, ppo_clip=0.2
    )
    loss.backward()
    ratio = torch.exp(logp_s.detach() - old)
    advantage = rewards + 0.1 * (logp_t - logp_s.detach()).clamp(-1, 1)
    clipped = ((ratio > 1.2) & (advantage > 0)) | ((ratio < 0.8) & (advantage < 0))
    expected = torch.where(clipped | ~valid, 0.0, -weights * advantage * ratio)
    assert torch.allclose(logp_s.grad, expected)
