"""The CoARS token-level objective on per-token log-probs (docs/METHOD.md), shared by the
fused coars_loss and its reference so the two differ only in how log-probs are computed.

    A_i  = clip(logp_T,i - logp_S,i, -c, c)                      (no gradient)
    adv_i = rewards_i + distill_coef * A_i
    loss = -sum_i token_weights_i * adv_i * logp_S,i             (REINFORCE)
    loss = -sum_i token_weights_i * min(r_i adv_i, clip(r_i, 1 - eps, 1 + eps) adv_i),
           r_i = exp(logp_S,i - old_logprobs_i)                  (with old_logprobs and ppo_clip)

Ignored rows (valid = False) contribute nothing.
"""

import torch


def coars_objective(
    logp_student,
    logp_teacher,
    rewards,
    token_weights,
    valid,
    *,
    distill_coef,
    credit_clip,
    old_logprobs=None,
    ppo_clip=None,
    entropy=None,
):
    """Returns (loss, stats): stats holds logp_student, logp_teacher, credit A and, when given,
    entropy, all detached [N]."""
    dtype = logp_student.dtype
    credit = (logp_teacher.detach() - logp_student.detach()).clamp(-credit_clip, credit_clip)
    credit = credit.masked_fill(~valid, 0)
    # Masking the inputs (not just the result) keeps NaN in ignored rows out of the gradient too.
    advantage = rewards.to(dtype).masked_fill(~valid, 0) + distill_coef * credit
    weights = token_weights.to(dtype).masked_fill(~valid, 0)
    if old_logprobs is None:
        surrogate = advantage * logp_student
    else:
        ratio = torch.exp(logp_student - old_logprobs.to(dtype).masked_fill(~valid, 0))
        clipped = ratio.clamp(1 - ppo_clip, 1 + ppo_clip)
        surrogate = torch.minimum(ratio * advantage, clipped * advantage)
    loss = -(weights * surrogate).sum()
    stats = {"logp_student": logp_student.detach(), "logp_teacher": logp_teacher.detach(), "credit": credit}
    if entropy is not None:
        stats["entropy"] = entropy.detach()
    return loss, stats
