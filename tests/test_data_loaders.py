"""The three shared datasets load with the figures their READMEs give, as ordered episodes."""

import gzip

import pytest

from coars_fast.data import load_dataset
from coars_fast.data.check import summarize

pytestmark = pytest.mark.data


def test_lastfm_matches_readme(lastfm):
    assert lastfm.num_items == 4606
    assert lastfm.source_rows == {"train.jsonl.gz": 50800, "val.jsonl.gz": 3133}
    # LLaRA / AFL keep histories of at least 3 items; the rest are the documented short rows.
    assert len(lastfm.split("train")) == 47872 and len(lastfm.split("val_all")) == 2767
    assert len(lastfm.split("val")) == 122  # one episode per user, the published protocol
    assert lastfm.title(0) == "Morcheeba"


def test_lastfm_val_sample_row(lastfm):
    """README sample: Joy Division, Kaizers Orchestra, Kent -> Iggy Pop."""
    ep = next(e for e in lastfm.split("val") if e.history == (399, 593, 594))
    assert [lastfm.title(i) for i in ep.history] == ["Joy Division", "Kaizers Orchestra", "Kent"]
    assert lastfm.title(ep.target) == "Iggy Pop"
    assert ep.seen == {399, 593, 594, 595} and ep.user_id.startswith("val-user-")


def test_lastfm_val_is_afl_one_row_per_user(lastfm, data_dir):
    """`val` is the last row of each user's chain of prefix rows: exactly the 122 rows AFL ships
    (read here straight from val_afl122.jsonl.gz, which the loader never opens)."""
    import gzip
    import json

    rows = [json.loads(line) for line in gzip.open(data_dir / "lastfm" / "llara" / "val_afl122.jsonl.gz", "rt")]
    expected = [(tuple(i for i in r["seq"] if i != 4606)[-10:], r["next"]) for r in rows]
    assert [(ep.history, ep.target) for ep in lastfm.split("val")] == expected
    users = [ep.user_id for ep in lastfm.split("val_all")]
    assert len(set(users)) == 122 and len(set(ep.user_id for ep in lastfm.split("val"))) == 122
    # every prefix row belongs to the user whose last row it precedes
    last = {ep.user_id: ep for ep in lastfm.split("val")}
    assert all(
        int(ep.episode_id.split("/")[1]) <= int(last[ep.user_id].episode_id.split("/")[1])
        for ep in lastfm.split("val_all")
    )


def test_movielens_matches_readme(movielens, data_dir):
    assert movielens.num_items == 1682 and len(movielens.user_sequences) == 943
    assert movielens.source_rows == {"u.data.gz": 100000}
    assert len(movielens.split("val")) == 943 and len(movielens.split("test")) == 943
    assert sum(len(s) for s in movielens.user_sequences.values()) == 100000
    assert movielens.title(0) == "Toy Story (1995)"


def test_movielens_is_chronological_leave_last_out(movielens, data_dir):
    stamps = {}
    with gzip.open(data_dir / "movielens/ml-100k/u.data.gz", "rt") as f:
        for line in f:
            user, movie, _, t = line.split("\t")
            stamps[(user, int(movie) - 1)] = int(t)  # index = movie id - 1 in u.item order
    for user in ("1", "196", "943"):
        seq = movielens.user_sequences[user]
        times = [stamps[(user, i)] for i in seq]
        assert times == sorted(times)
    val = {ep.user_id: ep for ep in movielens.split("val")}
    test = {ep.user_id: ep for ep in movielens.split("test")}
    seq = movielens.user_sequences["196"]
    assert val["196"].target == seq[-2] and val["196"].history == seq[-12:-2]
    assert test["196"].target == seq[-1] and test["196"].history == seq[-11:-1]
    assert all(len(ep.history) <= 10 for ep in movielens.split("train"))


def test_instruments_counts_and_asin_fallback(data_dir):
    with pytest.warns(UserWarning, match="ASINs instead of item titles"):
        ds = load_dataset("instruments", data_dir)
    assert ds.num_items == 9922 and len(ds.user_sequences) == 24772
    assert ds.source_rows == {"Instruments.inter.json.gz": 206153}
    assert ds.items[0].item_id == "B000FFWZKI" and ds.title(0) == "B000FFWZKI"
    assert len(ds.untitled) == 9922
    assert len(ds.split("val")) == len(ds.split("test")) == 24772


def test_instruments_titles_from_item_json(data_dir, tmp_path):
    """With LC-Rec's Instruments.item.json beside the interactions, titles replace ASINs."""
    import json
    import shutil

    folder = tmp_path / "instruments" / "lcrec-amazon2018-5core"
    shutil.copytree(data_dir / "instruments" / "lcrec-amazon2018-5core", folder)
    (folder / "Instruments.item.json").write_text(
        json.dumps({"1": {"title": "Behringer Micromix MX400", "brand": "Behringer"}})
    )
    ds = load_dataset("instruments", tmp_path)
    assert ds.title(1) == "Behringer Micromix MX400" and ds.items[1].attrs == {"brand": "Behringer"}
    assert 1 not in ds.untitled and len(ds.untitled) == 9921


@pytest.mark.parametrize("name", ["lastfm", "movielens"])
def test_histories_are_bounded_and_targets_valid(name, request):
    ds = request.getfixturevalue(name)
    for episodes in ds.splits.values():
        ids = [ep.episode_id for ep in episodes]
        assert len(set(ids)) == len(ids)
        for ep in episodes:
            assert 3 <= len(ep.history) <= 10
            assert 0 <= ep.target < ds.num_items and ep.target in ep.seen
            assert set(ep.history) <= ep.seen


def test_summary_figures(lastfm):
    s = summarize(lastfm)
    assert s["items"] == 4606 and s["users"] == 1737 and "HetRec" in s["user_note"]
    assert s["splits"]["val_all"]["episodes"] == 2767 and s["splits"]["val"]["episodes"] == 122
    assert s["splits"]["train"]["history_len"]["max"] == 10
    assert s["titles"]["coverage"] == 1.0


def test_lastfm_hetrec_sequences_match_a_sort_of_the_raw_file(lastfm, data_dir):
    """Per HetRec user, the LLaRA ids of the artists they tagged in order of first tagging (date,
    then file order): recomputed here by sorting the raw rows, not as the loader does it."""
    import csv

    hetrec = data_dir / "lastfm" / "hetrec2011-lastfm-2k"
    by_name = {lastfm.title(i): i for i in range(lastfm.num_items)}
    with gzip.open(hetrec / "artists.dat.gz", "rt", encoding="utf-8") as f:
        artists = {
            row[0]: by_name[row[1]]
            for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if row[1] in by_name and row[0] != "id"
        }
    with gzip.open(hetrec / "user_taggedartists.dat.gz", "rt", encoding="ascii") as f:
        rows = [r for r in csv.reader(f, delimiter="\t")][1:]
    ordered = sorted(
        (int(user), int(year), int(month), int(day), line, artists[artist])
        for line, (user, artist, _, day, month, year) in enumerate(rows)
        if artist in artists
    )
    expected = {}
    for user, *_, item in ordered:
        seq = expected.setdefault(str(user), [])
        if item not in seq:
            seq.append(item)
    assert lastfm.user_sequences == {user: tuple(seq) for user, seq in expected.items()}
    assert len(expected) == 1737
