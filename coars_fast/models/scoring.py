"""Next-token log-probabilities for many prompts that share a long prefix (computed once)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    shortest = min(len(p) for p in prompts)
    for i in range(shortest - 1):  # keep at least one token of each prompt for the suffix pass
        token = prompts[0][i]
        if any(p[i] != token for p in prompts):
            return i
    return shortest - 1


@torch.no_grad()
def next_token_logprobs(model, tokenizer, prompts: Sequence[Sequence[int]], adapter: str | None = None) -> torch.Tensor:
    """log p(next token | prompt) for each prompt, [len(prompts), vocab], fp32 on CPU.

    The longest common prefix runs once and its KV cache is shared by all suffixes, so asking one
    user about 20 items costs one history-length pass plus 20 short ones.
    """
    if adapter is not None:
        model.set_adapter(adapter)
    from transformers import DynamicCache

    device = next(model.parameters()).device
    n, shared = len(prompts), _common_prefix(prompts)
    cache = DynamicCache(config=model.config)
    if shared:
        model(
            input_ids=torch.tensor([list(prompts[0][:shared])], device=device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,  # the prefix is only needed as KV: no vocabulary projection of its rows
        )
        cache.batch_repeat_interleave(n)
    suffixes = [list(p[shared:]) for p in prompts]
    width = max(len(s) for s in suffixes)
    ids = torch.full((n, width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for row, suffix in enumerate(suffixes):  # right padding: real tokens never see the pads after them
        ids[row, : len(suffix)] = torch.tensor(suffix)
        mask[row, shared : shared + len(suffix)] = 1
    positions = torch.arange(shared, shared + width).expand(n, -1)
    # only the rows' last positions are projected on the vocabulary (a few distinct ones, every row)
    lasts = [len(s) - 1 for s in suffixes]
    keep = sorted(set(lasts))
    logits = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        cache=cache if shared else None,
        use_cache=bool(shared),
        logits_to_keep=torch.tensor(keep, device=device),
    ).logits
    column = torch.tensor([keep.index(last) for last in lasts], device=logits.device)
    return torch.log_softmax(logits[torch.arange(n, device=logits.device), column].float(), dim=-1).cpu()
