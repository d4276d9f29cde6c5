"""Candidate lists: target in, never a seen item, 20 distinct titles, deterministic per seed."""

import json
import subprocess
import sys

import pytest

from coars_fast.data import sasrec
from coars_fast.data.candidates import CandidateBuilder
from coars_fast.data.dataset import title_key
from coars_fast.errors import DataError

pytestmark = pytest.mark.data


def _check_lists(dataset, episodes, lists, k=20):
    for ep, cands in zip(episodes, lists):
        assert len(cands) == k and len(set(cands)) == k
        assert ep.target in cands
        assert not (set(cands) - {ep.target}) & ep.seen
        assert len({title_key(dataset.title(i)) for i in cands}) == k


@pytest.mark.parametrize("name", ["lastfm", "movielens"])
def test_random_lists_hold_target_and_unseen_negatives(name, request):
    ds = request.getfixturevalue(name)
    episodes = ds.split("val")
    lists = CandidateBuilder(ds, seed=0).build(episodes)
    _check_lists(ds, episodes, lists)
    # Shuffled: the target is not always in the same slot.
    positions = {cands.index(ep.target) for ep, cands in zip(episodes, lists)}
    assert len(positions) == 20


def test_movielens_negatives_avoid_the_whole_user_sequence(movielens):
    """Not only the history: items the user rated later are not negatives either."""
    ep = movielens.split("val")[0]
    cands = CandidateBuilder(movielens, seed=3).build([ep])[0]
    assert not (set(cands) - {ep.target}) & set(movielens.user_sequences[ep.user_id])


def test_duplicate_titles_never_share_a_list(movielens):
    twins = {}
    for i, item in enumerate(movielens.items):
        twins.setdefault(title_key(item.title), []).append(i)
    pairs = [ids for ids in twins.values() if len(ids) > 1]
    assert len(pairs) == 18  # ml-100k lists 18 movies twice under different ids
    lists = CandidateBuilder(movielens, seed=1).build(movielens.split("train")[:3000])
    for cands in lists:
        for ids in pairs:
            assert len(set(ids) & set(cands)) <= 1


CHILD = """
import json, sys
from coars_fast.data import load_dataset
from coars_fast.data.candidates import CandidateBuilder
ds = load_dataset("lastfm")
print(json.dumps(CandidateBuilder(ds, seed=int(sys.argv[1])).build(ds.split("val_all")[:200])))
"""


def _lists_in_fresh_process(seed, data_dir):
    env = {"COARS_FAST_DATA": str(data_dir), "PYTHONHASHSEED": str(seed + 11), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(seed)], capture_output=True, text=True, env=env, check=True)
    return [tuple(c) for c in json.loads(out.stdout)]


def test_same_seed_same_lists_across_processes(lastfm, data_dir):
    here = CandidateBuilder(lastfm, seed=7).build(lastfm.split("val_all")[:200])
    assert _lists_in_fresh_process(7, data_dir) == here
    assert _lists_in_fresh_process(7, data_dir) == here
    other = _lists_in_fresh_process(8, data_dir)
    assert sum(a != b for a, b in zip(other, here)) > 190


def test_sasrec_mode_is_the_top_of_sasrec_ranking(cyclic_dataset):
    cfg = sasrec.SASRecConfig(max_epochs=2)
    model = sasrec.load_or_train(cyclic_dataset, cfg, progress=False)
    episodes = cyclic_dataset.split("val")[:50]
    lists = CandidateBuilder(cyclic_dataset, mode="sasrec", num_candidates=10, sasrec=model).build(episodes)
    _check_lists(cyclic_dataset, episodes, lists, k=10)
    swapped = 0
    for ep, cands, ranking in zip(episodes, lists, model.rank([ep.history for ep in episodes])):
        # SASRec's top 10 outside what the user has seen; the target replaces the 10th if missing.
        top = [int(i) for i in ranking if int(i) not in ep.seen or int(i) == ep.target][:10]
        expected = set(top) if ep.target in top else set(top[:9]) | {ep.target}
        swapped += ep.target not in top
        assert set(cands) == expected
    assert swapped < len(episodes)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "popular"}, "unknown candidate mode"),
        ({"mode": "sasrec"}, "needs a trained SASRec"),
        ({"num_candidates": 1}, r"num_candidates must lie in \[2, 4606\]"),
    ],
)
def test_bad_candidate_settings(lastfm, kwargs, message):
    with pytest.raises(DataError, match=message):
        CandidateBuilder(lastfm, **kwargs)
