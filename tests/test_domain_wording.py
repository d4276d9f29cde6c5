"""The agents' prompts name items and past actions in the dataset's own words: a jsonl folder's
meta.json, or the config's data.item_noun / data.user_verb; built-in wording otherwise."""

import json

import pytest
from helpers import write_jsonl

from coars_fast.data import load_dataset
from coars_fast.data.candidates import CandidateBuilder
from coars_fast.data.synthetic import SyntheticSettings
from coars_fast.errors import DataError
from coars_fast.rollout import make_states

ITEMS = [(f"b{i}", f"Book {i}") for i in range(30)]
SEQUENCES = {f"u{u}": [f"b{(u + k) % 30}" for k in range(8)] for u in range(6)}


def _prompts(dataset):
    episodes = dataset.split("train")[:1]
    state = make_states(dataset, episodes, CandidateBuilder(dataset).build(episodes), max_turns=2)[0]
    return state.rec_prompt()[0]["content"] + state.rec_prompt()[1]["content"]


def test_meta_json_words_reach_the_prompts(tmp_path):
    folder = write_jsonl(tmp_path / "books", ITEMS, SEQUENCES)
    assert "interacted with" in _prompts(load_dataset("jsonl", folder))  # the generic wording
    (folder / "meta.json").write_text(json.dumps({"item_noun": "book", "user_verb": "read"}))
    text = _prompts(load_dataset("jsonl", folder))
    assert "The user read these" in text and "one book" in text and "interacted with" not in text


def test_the_config_overrides_a_built_in_wording():
    dataset = load_dataset("synthetic", synthetic_settings=SyntheticSettings(users=300))
    assert "album" in _prompts(dataset)
    dataset.item_noun, dataset.user_verb = "record", "spun"
    text = _prompts(dataset)
    assert "The user spun these" in text and "one record" in text and "album" not in text


@pytest.mark.parametrize(
    "meta, message",
    [
        ('{"item_nouns": "book"}', "unknown key 'item_nouns'; known keys: item_noun, user_verb"),
        ('["book"]', "must be an object"),
        ('{"item_noun": ""}', "'item_noun' must be a short non-empty string"),
        ('{"item_noun": "book"', "not valid JSON"),
    ],
)
def test_bad_meta_json_is_one_line(tmp_path, meta, message):
    folder = write_jsonl(tmp_path / "books", ITEMS, SEQUENCES)
    (folder / "meta.json").write_text(meta)
    with pytest.raises(DataError, match="meta.json") as err:
        load_dataset("jsonl", folder)
    assert message in str(err.value) and "\n" not in str(err.value)
