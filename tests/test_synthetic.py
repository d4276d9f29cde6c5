"""The synthetic learnability benchmark: reproducible, the hidden taste is in the titles and is the best
policy, knobs change what they say, ground-truth likes drive user-agent F1, bad knobs are one line."""

from collections import Counter

import pytest

from coars_fast.cli import main
from coars_fast.data import load_dataset
from coars_fast.data.candidates import CandidateBuilder
from coars_fast.data.synthetic import SyntheticSettings
from coars_fast.errors import DataError
from coars_fast.evaluation.user_f1 import preference_cases

SMALL = SyntheticSettings(users=300)


def _tags(title: str) -> str:
    """The 'Genre decade' label before the colon, read from the text alone (not the generator's attrs)."""
    return title.split(":")[0]


def _majority_pick(ds, ep, candidates) -> int:
    """The rule a trained Recommender should find: the candidate whose tags dominate the history."""
    counts = Counter(_tags(ds.title(i)) for i in ep.history)
    return max(candidates, key=lambda i: counts.get(_tags(ds.title(i)), 0))


def test_same_seed_same_dataset_other_seed_other():
    a, b, c = (
        load_dataset("synthetic", synthetic_settings=s) for s in (SMALL, SMALL, SyntheticSettings(users=300, seed=1))
    )
    assert [i.title for i in a.items] == [i.title for i in b.items]
    assert a.user_sequences == b.user_sequences
    assert a.user_sequences != c.user_sequences


def test_splits_follow_the_protocol_and_targets_follow_the_taste():
    ds = load_dataset("synthetic", synthetic_settings=SMALL)
    assert len(ds.split("val")) == len(ds.split("test")) == 300
    assert len({i.title.casefold() for i in ds.items}) == ds.num_items  # titles name items uniquely
    for split in ("val", "test"):
        for ep in ds.split(split):
            assert ep.target in ds.user_likes[ep.user_id]
            assert len(ep.history) == 10
    # the liked set is exactly one (genre, decade) and the history mostly shows it
    noise = []
    for user, seq in ds.user_sequences.items():
        liked_tags = {_tags(ds.title(i)) for i in ds.user_likes[user]}
        assert len(liked_tags) == 1 and len(ds.user_likes[user]) == SMALL.items_per_taste
        noise += [i not in ds.user_likes[user] for i in seq[:-2]]
    assert 0.12 < sum(noise) / len(noise) < 0.22  # noise 0.2, less the draws that fell back to the taste


def test_the_taste_rule_is_the_best_policy_and_far_above_random():
    ds = load_dataset("synthetic", synthetic_settings=SMALL)
    episodes = ds.split("val")
    lists = CandidateBuilder(ds, "random", 20, seed=0).build(episodes)
    hits = sum(_majority_pick(ds, ep, c) == ep.target for ep, c in zip(episodes, lists)) / len(episodes)
    print(f"taste-rule Hit@1 {hits:.3f} on {len(episodes)} users (random 0.05)")
    assert hits > 0.75
    # harder knobs lower the ceiling: 2 tastes leave many negatives of the user's taste
    easy_to_confuse = load_dataset(
        "synthetic", synthetic_settings=SyntheticSettings(users=300, genres=2, decades=1, items_per_taste=400)
    )
    episodes = easy_to_confuse.split("val")
    lists = CandidateBuilder(easy_to_confuse, "random", 20, seed=0).build(episodes)
    low = sum(_majority_pick(easy_to_confuse, ep, c) == ep.target for ep, c in zip(episodes, lists)) / len(episodes)
    assert low < 0.25


def test_titles_without_tags_hide_the_taste():
    ds = load_dataset("synthetic", synthetic_settings=SyntheticSettings(users=50, tags_in_title=False))
    assert not any(":" in item.title for item in ds.items)
    assert {item.attrs["genre"] for item in ds.items} == {
        "jazz",
        "rock",
        "folk",
        "techno",
        "classical",
        "hip hop",
        "reggae",
        "metal",
    }


def test_user_f1_cases_score_against_the_true_likes():
    ds = load_dataset("synthetic", synthetic_settings=SMALL)
    cases = preference_cases(ds, 40, seed=0)
    assert len(cases) == 40
    for case in cases:
        likes = ds.user_likes[case.episode.user_id]
        assert case.positives and set(case.positives) <= likes
        assert len(case.negatives) == 10 and not set(case.negatives) & likes
        assert not set(case.negatives) & set(ds.user_sequences[case.episode.user_id])


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("genres", 40, "genres must lie in [1, 12]"),
        ("noise", 1.5, "noise must lie in [0, 1)"),
        ("max_length", 40, "items_per_taste (24) must be >= max_length (40)"),
        ("min_length", 2, "min_length"),
    ],
)
def test_bad_knobs_are_one_clear_line(key, value, message, capsys, tmp_path):
    code = main(
        ["train", "--dataset", "synthetic", "--set", f"data.synthetic.{key}={value}", "--out", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        SyntheticSettings(**{key: value})
