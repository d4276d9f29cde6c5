"""User mistakes give a DataError naming the file (and line) and what belongs there."""

import gzip
import json

import pytest
from helpers import write_jsonl

from coars_fast.cli import main
from coars_fast.data import load_dataset
from coars_fast.errors import DataError

ITEMS = [("a", "Alpha"), ("b", "Beta"), ("c", "Gamma"), ("d", "Delta"), ("e", "Epsilon")]


def test_generic_jsonl_format(tmp_path):
    folder = write_jsonl(tmp_path / "mine", ITEMS, {"u1": ["a", "b", "c", "d", "e"], "u2": ["e", "d", "c", "b"]})
    ds = load_dataset("jsonl", folder)
    assert ds.num_items == 5 and ds.title(2) == "Gamma"
    assert [(ep.user_id, ep.history, ep.target) for ep in ds.split("test")] == [
        ("u1", (0, 1, 2, 3), 4),
        ("u2", (4, 3, 2), 1),
    ]
    assert [(ep.user_id, ep.target) for ep in ds.split("val")] == [("u1", 3)]
    assert ds.split("train") == []


def test_jsonl_timestamps_order_items_and_attrs_are_kept(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "items.jsonl").write_text(
        "".join(json.dumps({"item_id": i, "title": t, "genre": "x"}) + "\n" for i, t in ITEMS)
    )
    (folder / "sequences.jsonl").write_text(
        json.dumps({"user_id": "u", "items": ["c", "a", "b", "d"], "timestamps": [3, 1, 2, 4]}) + "\n"
    )
    ds = load_dataset("jsonl", folder)
    assert ds.user_sequences["u"] == (0, 1, 2, 3)
    assert ds.items[0].attrs == {"genre": "x"}


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(DataError, match="known datasets: lastfm, movielens, instruments, jsonl"):
        load_dataset("netflix", "/tmp")


def test_missing_data_directory_names_it(tmp_path):
    with pytest.raises(DataError, match=f"data directory {tmp_path / 'nope'} does not exist"):
        load_dataset("lastfm", tmp_path / "nope")


def test_missing_file_names_path_and_content(tmp_path):
    (tmp_path / "movielens" / "ml-100k").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        load_dataset("movielens", tmp_path)
    assert str(tmp_path / "movielens" / "ml-100k" / "u.item") in str(err.value)
    assert "movie list" in str(err.value) and "\n" not in str(err.value)


def test_a_data_dir_inside_the_layout_says_to_name_the_root(tmp_path):
    """--data-dir .../movielens/ml-100k (the folder holding u.item) is a common slip."""
    inner = tmp_path / "movielens" / "ml-100k"
    inner.mkdir(parents=True)
    with pytest.raises(
        DataError, match="has no movielens/ folder: --data-dir .* must be the folder that holds movielens/"
    ):
        load_dataset("movielens", inner)


def test_no_training_episodes_is_one_clear_line(tmp_path, capsys):
    """Every user with a single item: nothing to train SASRec on (was a dtype traceback inside it)."""
    write_jsonl(tmp_path, ITEMS, {"u1": ["a"], "u2": ["b"]})
    assert main(["baseline", "--dataset", "jsonl", "--data-dir", str(tmp_path), "--method", "sasrec"]) == 2
    err = capsys.readouterr().err
    assert "no training episodes" in err and len(err.strip().splitlines()) == 1


def test_data_dir_from_environment(tmp_path, monkeypatch):
    write_jsonl(tmp_path, ITEMS, {"u1": ["a", "b", "c", "d", "e"]})
    monkeypatch.setenv("COARS_FAST_DATA", str(tmp_path))
    assert load_dataset("jsonl").num_items == 5


@pytest.mark.parametrize(
    "items_text, seq_text, message",
    [
        (
            '{"item_id": "a", "title": "A"}\n{"item_id": "a", "title": "B"}\n',
            "",
            r"items.jsonl:2: duplicate item_id 'a'",
        ),
        ('{"item_id": "a", "title": ""}\n', "", r"items.jsonl:1: \"title\" must be a non-empty string"),
        ('{"item_id": "a", "title": "A"}\nnot json\n', "", r"items.jsonl:2: not valid JSON"),
        ('["a"]\n', "", r"items.jsonl:1: expected a JSON object"),
        (
            '{"item_id": "a", "title": "A"}\n',
            '{"user_id": "u", "items": ["a", "zz"]}\n',
            r"sequences.jsonl:1: item ids not in items.jsonl: \['zz'\]",
        ),
        (
            '{"item_id": "a", "title": "A"}\n',
            '{"user_id": "u", "items": ["a"], "timestamps": [1, 2]}\n',
            r"sequences.jsonl:1: \"timestamps\" must be one number per item",
        ),
        (
            '{"item_id": "a", "title": "A"}\n',
            '\n{"items": ["a"]}\n',
            r"sequences.jsonl:2: \"user_id\" must be a non-empty string",
        ),
        ('{"item_id": "a", "title": "A"}\n', "", r"sequences.jsonl: no user sequences"),
    ],
)
def test_malformed_jsonl_rows_name_file_and_line(tmp_path, items_text, seq_text, message):
    (tmp_path / "items.jsonl").write_text(items_text)
    (tmp_path / "sequences.jsonl").write_text(seq_text)
    with pytest.raises(DataError, match=message):
        load_dataset("jsonl", tmp_path)


def _lastfm_folder(tmp_path, train_rows):
    folder = tmp_path / "lastfm" / "llara"
    folder.mkdir(parents=True)
    (folder / "id2name.txt").write_text("0::A\n1::B\n2::C\n3::D\n")
    with gzip.open(folder / "train.jsonl.gz", "wt") as f:
        f.write(train_rows)
    (folder / "val.jsonl").write_text('{"seq": [0, 1, 2, 4, 4, 4, 4, 4, 4, 4], "len_seq": 3, "next": 3}\n')
    return tmp_path


def test_lastfm_plain_and_gzip_files_both_load(tmp_path):
    ds = load_dataset(
        "lastfm", _lastfm_folder(tmp_path, '{"seq": [3, 2, 1, 4, 4, 4, 4, 4, 4, 4], "len_seq": 3, "next": 0}\n')
    )
    assert ds.split("train")[0].history == (3, 2, 1) and ds.split("val")[0].target == 3


@pytest.mark.parametrize(
    "row, message",
    [
        ('{"seq": [0, 1, 2], "len_seq": 3, "next": 9}', r"train.jsonl.gz:2: item ids must lie in \[0, 4\)"),
        ('{"seq": "0 1 2", "next": 1}', r"train.jsonl.gz:2: expected \{\"seq\""),
        ('{"seq": [0, 1, 2], "next": 1', r"train.jsonl.gz:2: not valid JSON"),
    ],
)
def test_malformed_lastfm_row_names_file_and_line(tmp_path, row, message):
    good = '{"seq": [3, 2, 1, 4, 4, 4, 4, 4, 4, 4], "len_seq": 3, "next": 0}\n'
    with pytest.raises(DataError, match=message):
        load_dataset("lastfm", _lastfm_folder(tmp_path, good + row + "\n"))


def test_cli_reports_user_errors_without_traceback(tmp_path, capsys):
    assert main(["data", "check", "--dataset", "netflix", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("coars-fast: error: unknown dataset 'netflix'") and "Traceback" not in err
    assert main(["baseline", "--dataset", "movielens", "--data-dir", str(tmp_path)]) == 2
    assert "has no movielens/ folder" in capsys.readouterr().err


def _hetrec(tmp_path, tagged: bytes):
    root = _lastfm_folder(tmp_path, '{"seq": [3, 2, 1, 4, 4, 4, 4, 4, 4, 4], "len_seq": 3, "next": 0}\n')
    hetrec = root / "lastfm" / "hetrec2011-lastfm-2k"
    hetrec.mkdir()
    (hetrec / "artists.dat").write_text("id\tname\turl\tpictureURL\n7\tA\tu\tp\n8\tB\tu\tp\n9\tZ\tu\tp\n")
    (hetrec / "user_taggedartists.dat").write_bytes(tagged)
    return root


def test_lastfm_hetrec_rows_in_date_then_file_order_with_either_line_ending(tmp_path):
    rows = "userID\tartistID\ttagID\tday\tmonth\tyear\n2\t8\t1\t1\t5\t2009\n2\t7\t1\t1\t5\t2009\n2\t8\t3\t1\t1\t2008\n"
    rows += "\n5\t9\t1\t1\t1\t2001\n5\t7\t1\t3\t1\t2001\n"  # a blank line; artist 9 is not in LLaRA's list
    for ending in ("\n", "\r\n"):
        ds = load_dataset("lastfm", _hetrec(tmp_path / ending.encode().hex(), rows.replace("\n", ending).encode()))
        assert ds.user_sequences == {"2": (1, 0), "5": (0,)}  # B first tagged in 2008, then A


@pytest.mark.parametrize("bad", ["2\t7\t1\t1\tMay\t2009", "2\t7\t1\t1\t5", "2 7 1 1 5 2009", "2\t7\t1\t1\t5\t2009\t3"])
def test_malformed_hetrec_row_names_file_and_line(tmp_path, bad):
    rows = f"userID\tartistID\ttagID\tday\tmonth\tyear\n2\t8\t1\t1\t5\t2009\n{bad}\n2\t7\t1\t1\t5\t2009\n"
    with pytest.raises(DataError, match=r"user_taggedartists.dat:3: expected 6 tab-separated numbers"):
        load_dataset("lastfm", _hetrec(tmp_path, rows.encode()))
