"""Next-token log-probabilities for many prompts; a prefix that prompts share is computed once."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from coars_fast.models.prefill import run_chains
from coars_fast.models.prompt_cache import shared_prefixes


@torch.no_grad()
def next_token_logprobs(model, tokenizer, prompts: Sequence[Sequence[int]], adapter: str | None = None) -> torch.Tensor:
    """log p(next token | prompt) for each prompt, [len(prompts), vocab], fp32 on CPU.

    One forward over a token stream without padding: prompts that share a long prefix (one user
    asked about 20 items) are chains continuing that prefix's chain, computed once; only each
    prompt's last position is projected on the vocabulary.
    """
    if adapter is not None:
        model.set_adapter(adapter)
    chains, ends, grouped = [], [None] * len(prompts), set()
    for n, members in shared_prefixes(prompts):
        chains.append((list(prompts[members[0]][:n]), 0, None, None))
        parent = len(chains) - 1
        for i in members:
            chains.append((list(prompts[i][n:]), n, None, parent))
            ends[i] = len(chains) - 1
        grouped.update(members)
    for i, prompt in enumerate(prompts):
        if i not in grouped:
            chains.append((list(prompt), 0, None, None))
            ends[i] = len(chains) - 1
    hidden, _ = run_chains(model, chains)
    lasts = torch.tensor([len(c[0]) for c in chains]).cumsum(0) - 1
    logits = model.get_output_embeddings()(hidden[lasts[ends].to(hidden.device)])
    return torch.log_softmax(logits.float(), dim=-1).cpu()
