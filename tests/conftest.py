import os

import pytest
from helpers import tiny_llama, write_jsonl

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


def make_cyclic(folder):
    """60 items; every user walks the cycle i -> i+1 from a random start: a sequential pattern
    SASRec must learn and popularity cannot. Written to `folder` in the generic jsonl format."""
    import random

    rng = random.Random(0)
    n = 60
    items = [(f"i{k}", f"Item number {k}") for k in range(n)]
    sequences = {}
    for u in range(400):
        start, length = rng.randrange(n), rng.randrange(6, 14)
        sequences[f"u{u}"] = [f"i{(start + k) % n}" for k in range(length)]
    return write_jsonl(folder, items, sequences)


@pytest.fixture
def cyclic_dataset(tmp_path):
    return load_dataset("jsonl", make_cyclic(tmp_path / "cyclic"))


@pytest.fixture(scope="session")
def smol_tokenizer(tmp_path_factory):
    """The embedded model's tokenizer (its GGUF is converted once per test session)."""
    os.environ["COARS_FAST_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    from transformers import AutoTokenizer

    from coars_fast.models.loading import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.fixture(scope="session")
def tiny_model_dir(smol_tokenizer, tmp_path_factory):
    """A tiny random Llama saved like any local model folder (config, weights, tokenizer)."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_llama(smol_tokenizer).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder
