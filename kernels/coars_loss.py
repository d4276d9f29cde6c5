"""coars_loss: the CoARS self-distilled policy-gradient loss straight from hidden states."""

from . import reference
from .backends import active_backend
from .fused_logprobs import fused_logprobs
from .objective import coars_objective
from .validation import check_logprob_inputs, check_loss_inputs, check_teacher_hidden


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
    """(loss, stats) for one agent's response tokens (docs/METHOD.md, docs/KERNELS.md).

    loss = -sum_i token_weights_i (rewards_i + distill_coef A_i) logp_S,i with the self-distilled
    credit A_i = clip(logp_T,i - logp_S,i, -credit_clip, credit_clip) (no gradient); with
    old_logprobs and ppo_clip, the PPO-clipped surrogate instead (kernels/objective.py). rewards and
    token_weights are [N] (broadcast per turn and 1/|y_t| by the caller). stats holds logp_student,
    logp_teacher, credit and, with return_entropy, the student entropy, all detached [N].

    With a frozen head on the C++ and torch backends this costs three weight passes in all (teacher
    and student logits, plus the softmax-weighted weight sum for the gradient) and the backward is
    elementwise; the weight gradient, when asked, adds a streaming pass.
    """
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
    backend = active_backend(student_hidden.device)
    if backend == "reference":
        return reference.coars_loss(
            student_hidden,
            teacher_hidden,
            weight,
            targets,
            rewards,
            token_weights,
            distill_coef=distill_coef,
            credit_clip=credit_clip,
            temperature=temperature,
            ignore_index=ignore_index,
            old_logprobs=old_logprobs,
            ppo_clip=ppo_clip,
            return_entropy=return_entropy,
        )
    logp_student, logp_teacher, entropy = fused_logprobs(
        student_hidden,
        teacher_hidden.detach(),
        weight,
        targets,
        temperature=temperature,
        ignore_index=ignore_index,
        with_entropy=return_entropy,
        backend=backend,
    )
    return coars_objective(
        logp_student,
        logp_teacher,
        rewards,
        token_weights,
        targets != ignore_index,
        distill_coef=distill_coef,
        credit_clip=credit_clip,
        old_logprobs=old_logprobs,
        ppo_clip=ppo_clip,
        entropy=entropy if return_entropy else None,
    )
