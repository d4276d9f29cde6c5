"""Next-token log-probabilities for many prompts; a prefix that prompts share is computed once."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from coars_fast.models.prefill import run_chains
from coars_fast.models.prompt_cache import shared_prefixes


@torch.no_grad()
def next_token_logprobs(model, tokenizer, prompts: Sequence[Sequence[int]], adapter: str | None = None) -> torch.Tensor:
    """log p(next token | prompt) for each prompt, [len(prompts), vocab], fp32 on CPU.

    One forward over a token stream without padding, sharing on two levels: prompts with a long
    common prefix (one user asked about 20 items) continue one chain of it, and those prefixes in
    turn continue one chain of what they share (the system prompt and wording that every user's
    questions begin with). Only each prompt's last position is projected on the vocabulary.
    """
    if adapter is not None:
        model.set_adapter(adapter)
    groups = shared_prefixes(prompts)
    grouped = {i for _, members in groups for i in members}
    lone = [i for i in range(len(prompts)) if i not in grouped]
    # the first level's heads: each group's shared prefix, each lone prompt whole
    heads = [list(prompts[members[0]][:n]) for n, members in groups] + [list(prompts[i]) for i in lone]
    chains: list = []
    head_ends = _shared_chains(heads, chains)
    ends = [0] * len(prompts)
    for g, (n, members) in enumerate(groups):
        for i in members:
            chains.append((list(prompts[i][n:]), n, None, head_ends[g]))
            ends[i] = len(chains) - 1
    for k, i in enumerate(lone):
        ends[i] = head_ends[len(groups) + k]
    hidden, _ = run_chains(model, chains)
    lasts = torch.tensor([len(c[0]) for c in chains]).cumsum(0) - 1
    logits = model.get_output_embeddings()(hidden[lasts[ends].to(hidden.device)])
    return torch.log_softmax(logits.float(), dim=-1).cpu()


def _shared_chains(heads: Sequence[list[int]], chains: list) -> list[int]:
    """Appends chains for `heads` (those that share a long prefix continue one chain of it) and
    returns, per head, the index of the chain that ends it."""
    ends = [0] * len(heads)
    grouped = set()
    for r, members in shared_prefixes(heads):
        chains.append((heads[members[0]][:r], 0, None, None))
        root = len(chains) - 1
        for h in members:
            chains.append((heads[h][r:], r, None, root))
            ends[h] = len(chains) - 1
        grouped.update(members)
    for h, head in enumerate(heads):
        if h not in grouped:
            chains.append((head, 0, None, None))
            ends[h] = len(chains) - 1
    return ends
