"""coars_fast.kernels: fused LM-head ops for RL on response tokens, without [N, V] logits.

    token_logprobs(hidden, weight, targets)                      -> logp [N] (and entropy [N])
    teacher_student_logprobs(student_hidden, teacher_hidden, weight, targets)
                                                                 -> (logp_student, logp_teacher)
    coars_loss(student_hidden, teacher_hidden, weight, targets, rewards, token_weights)
                                                                 -> (loss, stats)
    reference.*                                                  the same on materialised logits
    active_backend(device)                                       "triton" | "gemm" | "cpu" | "torch" | "reference"

Imports torch only (triton lazily, on CUDA); see docs/KERNELS.md.
"""

import os

from . import reference
from .backends import active_backend
from .coars_loss import coars_loss
from .teacher_student_logprobs import teacher_student_logprobs
from .token_logprobs import token_logprobs

__all__ = ["token_logprobs", "teacher_student_logprobs", "coars_loss", "reference", "active_backend"]

if __name__ == "kernels":  # not coars_fast.kernels: the folder itself, found through sys.path

    def __getattr__(name):
        # transformers probes `kernels` (and its __version__) at import time; a name it really
        # wants (>= 5.25) gets one clear line instead of "cannot import name ... from 'kernels'"
        if name.startswith("__") or any(f.split(".")[0] == name for f in os.listdir(os.path.dirname(__file__))):
            raise AttributeError(name)  # a dunder, or one of our own modules not yet imported
        raise ImportError(
            f"coars-fast: `from kernels import {name}` found the kernels/ folder of a coars-fast checkout, "
            "not the Hugging Face `kernels` package, because the repository root is on sys.path (a "
            "`python -m ...` or `python -c` run there). Run from another folder, or with `python -P`, or "
            "install transformers < 5.25 (what setup.py asks for)."
        )
