"""token_logprobs: log pi(y_i | x) per response row, from hidden states and the LM-head weight."""

from . import reference
from .backends import active_backend
from .fused_logprobs import fused_logprobs
from .validation import check_logprob_inputs


def token_logprobs(hidden, weight, targets, *, temperature=1.0, ignore_index=-100, return_entropy=False):
    """Per-row log-probabilities of `targets` under softmax(hidden @ weight.T / temperature).

    hidden [N, D] is the final hidden state at the position predicting targets[i] (shift applied);
    weight [V, D] the LM head; targets [N] token ids, or ignore_index for rows to skip (their
    log-prob and entropy are 0 and they get no gradient). Returns logp [N] in float32 (float64 for
    float64 inputs), and entropy [N] when return_entropy. Differentiable w.r.t. hidden and weight
    (and through the entropy) for any upstream gradient; [N, V] logits are never materialised.
    """
    check_logprob_inputs(hidden, weight, targets, temperature=temperature, ignore_index=ignore_index)
    backend = active_backend(hidden.device)
    if backend == "reference":
        return reference.token_logprobs(
            hidden, weight, targets, temperature=temperature, ignore_index=ignore_index, return_entropy=return_entropy
        )
    logp, _, entropy = fused_logprobs(
        hidden,
        None,
        weight,
        targets,
        temperature=temperature,
        ignore_index=ignore_index,
        with_entropy=return_entropy,
        backend=backend,
    )
    return (logp, entropy) if return_entropy else logp
