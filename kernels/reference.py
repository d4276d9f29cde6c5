"""Ground truth for every kernel: the same three ops on materialised logits with plain autograd.

Logits are float32, or float64 for float64 inputs (tests pass float64 copies to get an exact
reference). Memory is O(N x V): use it for testing and debugging only.
"""

import torch

from .objective import coars_objective
from .validation import check_logprob_inputs, check_loss_inputs, check_teacher_hidden


def _logprobs(hidden, weight, targets, temperature, ignore_index, with_entropy):
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    log_softmax = ((hidden.to(dtype) @ weight.to(dtype).t()) / temperature).log_softmax(-1)
    valid = targets != ignore_index
    logp = log_softmax.gather(1, targets.long().masked_fill(~valid, 0)[:, None]).squeeze(1)
    logp = logp.masked_fill(~valid, 0)
    entropy = None
    if with_entropy:
        entropy = -(log_softmax.exp() * log_softmax).sum(-1).masked_fill(~valid, 0)
    return logp, entropy


def token_logprobs(hidden, weight, targets, *, temperature=1.0, ignore_index=-100, return_entropy=False):
    check_logprob_inputs(hidden, weight, targets, temperature=temperature, ignore_index=ignore_index)
    logp, entropy = _logprobs(hidden, weight, targets, temperature, ignore_index, return_entropy)
    return (logp, entropy) if return_entropy else logp


def teacher_student_logprobs(student_hidden, teacher_hidden, weight, targets, *, temperature=1.0, ignore_index=-100):
    check_logprob_inputs(student_hidden, weight, targets, temperature=temperature, ignore_index=ignore_index)
    check_teacher_hidden(student_hidden, teacher_hidden)
    logp_student, _ = _logprobs(student_hidden, weight, targets, temperature, ignore_index, False)
    with torch.no_grad():
        logp_teacher, _ = _logprobs(teacher_hidden, weight, targets, temperature, ignore_index, False)
    return logp_student, logp_teacher


def coars_loss(
    student_hidden,
    teacher_hidden,
    weight,
    targets,
    rewards,
    token_weights,
    *,
    distill_coef=0.1,
    credit_clip=1.0,
    temperature=1.0,
    ignore_index=-100,
    old_logprobs=None,
    ppo_clip=None,
    return_entropy=False,
):
    check_logprob_inputs(student_hidden, weight, targets, temperature=temperature, ignore_index=ignore_index)
    check_teacher_hidden(student_hidden, teacher_hidden)
    check_loss_inputs(
        student_hidden,
        rewards,
        token_weights,
        distill_coef=distill_coef,
        credit_clip=credit_clip,
        old_logprobs=old_logprobs,
        ppo_clip=ppo_clip,
    )
    logp_student, entropy = _logprobs(student_hidden, weight, targets, temperature, ignore_index, return_entropy)
    with torch.no_grad():
        logp_teacher, _ = _logprobs(teacher_hidden, weight, targets, temperature, ignore_index, False)
    valid = targets != ignore_index
    return coars_objective(
        logp_student,
        logp_teacher,
        rewards,
        token_weights,
        valid,
        distill_coef=distill_coef,
        credit_clip=credit_clip,
        old_logprobs=old_logprobs,
        ppo_clip=ppo_clip,
        entropy=entropy,
    )
