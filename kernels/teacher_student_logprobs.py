"""teacher_student_logprobs: student and teacher log-probs of the same tokens in one weight pass."""

from . import reference
from .backends import active_backend
from .fused_logprobs import fused_logprobs
from .validation import check_logprob_inputs, check_teacher_hidden


def teacher_student_logprobs(student_hidden, teacher_hidden, weight, targets, *, temperature=1.0, ignore_index=-100):
    """(logp_student [N], logp_teacher [N]) of `targets` under the same LM head.

    The teacher is the same model with a privileged prompt (docs/METHOD.md); its rows share
    every loaded weight tile with the student's. Gradient flows to student_hidden (and weight) only:
    logp_teacher is not differentiable and teacher_hidden gets no gradient. Ignored rows give 0.
    """
    check_logprob_inputs(student_hidden, weight, targets, temperature=temperature, ignore_index=ignore_index)
    check_teacher_hidden(student_hidden, teacher_hidden)
    backend = active_backend(student_hidden.device)
    if backend == "reference":
        return reference.teacher_student_logprobs(
            student_hidden, teacher_hidden, weight, targets, temperature=temperature, ignore_index=ignore_index
        )
    logp_student, logp_teacher, _ = fused_logprobs(
        student_hidden,
        teacher_hidden.detach(),
        weight,
        targets,
        temperature=temperature,
        ignore_index=ignore_index,
        with_entropy=False,
        backend=backend,
    )
    return logp_student, logp_teacher
