import json
import os

import pytest

from coars_fast.data import load_dataset, resolve_data_dir


@pytest.fixture(scope="session")
def data_dir():
    """The shared datasets. Missing data fails in CI (CI=true) and skips elsewhere."""
    path = resolve_data_dir()
    if not (path / "lastfm").is_dir():
        message = f"datasets not found under {path}: set COARS_FAST_DATA to the folder holding lastfm/, movielens/, instruments/"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def lastfm(data_dir):
    return load_dataset("lastfm", data_dir)


@pytest.fixture(scope="session")
def movielens(data_dir):
    return load_dataset("movielens", data_dir)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Each test session caches SASRec models and converted weights away from the user's cache."""
    monkeypatch.setenv("COARS_FAST_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


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


@pytest.fixture
def cyclic_dataset(tmp_path):
    """60 items; every user walks the cycle i -> i+1 from a random start: a sequential pattern
    SASRec must learn and popularity cannot."""
    import random

    rng = random.Random(0)
    n = 60
    items = [(f"i{k}", f"Item number {k}") for k in range(n)]
    sequences = {}
    for u in range(400):
        start, length = rng.randrange(n), rng.randrange(6, 14)
        sequences[f"u{u}"] = [f"i{(start + k) % n}" for k in range(length)]
    return load_dataset("jsonl", write_jsonl(tmp_path / "cyclic", items, sequences))


@pytest.fixture(scope="session")
def smol_tokenizer(tmp_path_factory):
    """The embedded model's tokenizer (its GGUF is converted once per test session)."""
    os.environ["COARS_FAST_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    from transformers import AutoTokenizer

    from coars_fast.models.loading import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


def tiny_llama(tokenizer, hidden=64, layers=2, seed=0):
    """A randomly initialised Llama with the real tokenizer's vocabulary: fast and fully real code paths."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_model_dir(smol_tokenizer, tmp_path_factory):
    """A tiny random Llama saved like any local model folder (config, weights, tokenizer)."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_llama(smol_tokenizer).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder
