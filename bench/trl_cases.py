"""The log-prob and loss part of a TRL GRPO step, with TRL's own fused LM head against TRL's head
routed to coars-fast's kernels (coars_fast.integrations.trl). Also a command line
(`python bench/trl_cases.py trl IMPL SIZE float32`) that runs one side in a fresh process and prints
its peak extra resident memory (see measure.py).

What runs is exactly what TRL 1.16's GRPOTrainer runs per micro-batch to get its per-token log-probs
and entropies (`model(**inputs, labels=labels, fused_lm_head=True)` on a model patched by
`add_fused_lm_head(..., outputs=("log_probs", "entropy"))`), then GRPO's token-level loss at the
first iteration (ratio 1: `-advantage * logp`, averaged over completion tokens) and its backward.
Generation and the reward functions, the same on both sides, are left out. TRL's side is its best
configuration on this machine: its own chunked head (TRL materialises no `[tokens x vocab]` logits
either) with its vocabulary chunk tuned here (one run each at the cpu size: 32,768 (TRL's default)
6.98 s, 8,192 7.15 s, 4,096 4.30 s, 2,048 4.98 s, 1,024 3.89 s, 512 5.30 s); fp32. The model: SmolLM2-135M's width and 49,152-token vocabulary (the vocabulary-heavy
part) with 2 layers; 8 sequences of 128 prompt + 128 completion tokens.
"""

import json
import sys

import torch
from measure import rss_high_water

SIZES = {
    "cpu": dict(
        hidden=576, intermediate=1536, layers=2, heads=9, kv_heads=3, vocab=49152, batch=8, prompt=128, completion=128
    ),
    "smoke": dict(
        hidden=64, intermediate=128, layers=1, heads=4, kv_heads=2, vocab=1003, batch=2, prompt=9, completion=7
    ),
}
SEED = 0


def make_inputs(size):
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    s = SIZES[size]
    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=s["vocab"],
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).train()
    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))  # as GRPOTrainer does
    length = s["prompt"] + s["completion"]
    ids = torch.randint(0, s["vocab"], (s["batch"], length))
    labels = ids.clone()
    labels[:, : s["prompt"]] = -100
    return dict(size=s, model=model, ids=ids, labels=labels, advantages=torch.randn(s["batch"], 1), device=ids.device)


def _grpo_loss_backward(x):
    model = x["model"]
    out = model(input_ids=x["ids"], attention_mask=torch.ones_like(x["ids"]), labels=x["labels"], fused_lm_head=True)
    mask = (x["labels"][:, 1:] != -100).float()
    loss = -((x["advantages"] * out.log_probs) * mask).sum() / mask.sum()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), out.entropy.detach(), grads


TRL_CHUNK = 1024  # tuned above


def _trl(x):
    import trl.trainer.utils as trl_utils

    default, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE, TRL_CHUNK
    try:
        return _grpo_loss_backward(x)
    finally:
        trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = default


def _coars(x):
    from coars_fast.integrations.trl import use_coars_kernels

    with use_coars_kernels():
        return _grpo_loss_backward(x)


IMPLEMENTATIONS = {"trl": {"coars-fast": _coars, "trl": _trl}}


if __name__ == "__main__":
    case, impl, size, _dtype = sys.argv[1:5]
    print(json.dumps({"peak_extra_bytes": rss_high_water(IMPLEMENTATIONS[case][impl], make_inputs(size))}))
