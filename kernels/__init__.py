"""coars_fast.kernels: fused LM-head ops for RL on response tokens, without [N, V] logits.

    token_logprobs(hidden, weight, targets)                      -> logp [N] (and entropy [N])
    teacher_student_logprobs(student_hidden, teacher_hidden, weight, targets)
                                                                 -> (logp_student, logp_teacher)
    coars_loss(student_hidden, teacher_hidden, weight, targets, rewards, token_weights)
                                                                 -> (loss, stats)
    reference.*                                                  the same on materialised logits
    active_backend(device)                                       "triton" | "cpu" | "torch" | "reference"

Imports torch only (triton lazily, on CUDA); see docs/KERNELS.md.
"""

if __name__ == "kernels":  # not coars_fast.kernels: the folder itself, found through sys.path
    raise ImportError(
        "coars-fast: the folder kernels/ of a coars-fast checkout was imported as the package `kernels` "
        "because the repository root is on sys.path (a `python -m ...` or `python -c` run there); it hides "
        "the Hugging Face `kernels` package that transformers >= 5.25 imports. Run from another folder, "
        "or with `python -P`, or install transformers < 5.25 (what setup.py asks for)."
    )

from . import reference
from .backends import active_backend
from .coars_loss import coars_loss
from .teacher_student_logprobs import teacher_student_logprobs
from .token_logprobs import token_logprobs

__all__ = ["token_logprobs", "teacher_student_logprobs", "coars_loss", "reference", "active_backend"]
