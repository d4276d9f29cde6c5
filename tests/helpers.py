"""Plain helpers shared by tests (imported as `helpers`; fixtures stay in conftest.py)."""

import json
from types import SimpleNamespace

import torch


def write_jsonl(folder, items, sequences):
    """A dataset in the generic format: `items` is [(id, title)], `sequences` is {user: [ids]}."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "items.jsonl", "w") as f:
        for item_id, title in items:
            f.write(json.dumps({"item_id": item_id, "title": title}) + "\n")
    with open(folder / "sequences.jsonl", "w") as f:
        for user, seq in sequences.items():
            f.write(json.dumps({"user_id": user, "items": seq}) + "\n")
    return folder


def tiny_llama(tokenizer=None, hidden=64, layers=2, seed=0, vocab=None):
    """A randomly initialised Llama with the real tokenizer's vocabulary (or, with no tokenizer, `vocab`
    token ids and no special ones): fast and fully real code paths."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    special = tokenizer or SimpleNamespace(bos_token_id=None, eos_token_id=None, pad_token_id=None)
    config = LlamaConfig(
        vocab_size=len(tokenizer) if tokenizer is not None else vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=special.bos_token_id,
        eos_token_id=special.eos_token_id,
        pad_token_id=special.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = special.eos_token_id
    return model.requires_grad_(False)


def count_sdpa_calls(monkeypatch) -> list:
    """Wraps torch's scaled_dot_product_attention for the test; each call appends to the returned list."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k)
    )
    return calls
