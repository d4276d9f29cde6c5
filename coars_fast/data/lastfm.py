"""LastFM in the LLaRA / AFL preprocessing: rows of (history of up to 10 artists -> next artist).

Folder layout under the data directory: `lastfm/llara/{train,val}.jsonl[.gz]` (test too, if you
have it) and `lastfm/llara/id2name.txt`. The rows carry no user id, so each row is its own "user".
For the user-agent F1 protocol, per-user sequences come from the original HetRec files
(`lastfm/hetrec2011-lastfm-2k/user_taggedartists.dat` ordered by date, `artists.dat` for names),
mapped to LLaRA ids by artist name; without that folder the F1 protocol is unavailable.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from coars_fast.data.dataset import HISTORY_LEN, MIN_HISTORY, Dataset, Episode, Item
from coars_fast.data.files import find_file, json_lines, malformed, text_lines

SPLITS = ("train", "val", "test")


def load(data_dir: Path, history_len: int = HISTORY_LEN, min_history: int = MIN_HISTORY) -> Dataset:
    folder = data_dir / "lastfm" / "llara"
    items = _read_names(find_file(folder, "id2name.txt", "LLaRA's `id::artist name` lines"))
    pad = len(items)  # LLaRA right-pads histories with id == number of items
    splits, rows = {}, {}
    for split in SPLITS:
        path = find_file(folder, f"{split}.jsonl", f"the LLaRA {split} rows", required=split != "test")
        if path is None:
            continue
        splits[split], rows[path.name] = _read_rows(path, split, pad, history_len, min_history)
    hetrec = data_dir / "lastfm" / "hetrec2011-lastfm-2k"
    sequences = _hetrec_sequences(hetrec, items) if hetrec.is_dir() else {}
    return Dataset(
        name="lastfm",
        items=items,
        splits=splits,
        user_sequences=sequences,
        source_rows=rows,
        user_note="HetRec users in tagging order, mapped to LLaRA ids; for user-agent F1 only, LLaRA rows carry no user ids",
    )


def _hetrec_sequences(folder: Path, items: list[Item]) -> dict[str, tuple[int, ...]]:
    """Per HetRec user, the LLaRA ids of the artists they tagged, by first tagging date."""
    by_name = {item.title: index for index, item in enumerate(items)}
    artists = find_file(folder, "artists.dat", "HetRec's `id \\t name \\t url \\t pictureURL` lines")
    artist_index = {}
    for line_no, line in text_lines(artists):
        fields = line.split("\t")
        if line_no == 1 or len(fields) < 2:
            continue  # header
        if fields[1] in by_name:
            artist_index[fields[0]] = by_name[fields[1]]
    tags = find_file(folder, "user_taggedartists.dat", "HetRec's `user \\t artist \\t tag \\t day \\t month \\t year` lines")
    first_seen: dict[str, dict[int, tuple]] = defaultdict(dict)
    for line_no, line in text_lines(tags, "ascii"):
        fields = line.split("\t")
        if line_no == 1:
            continue  # header
        if len(fields) != 6 or not all(f.strip().isdigit() for f in fields):
            raise malformed(tags, line_no, f"expected 6 tab-separated numbers, got {line[:80]!r}")
        user, artist, _, day, month, year = fields
        if artist in artist_index:
            key = (int(year), int(month), int(day), line_no)  # file order breaks ties within a day
            item = artist_index[artist]
            first_seen[user].setdefault(item, key)
            first_seen[user][item] = min(first_seen[user][item], key)
    return {
        user: tuple(sorted(seen, key=seen.get))
        for user, seen in sorted(first_seen.items(), key=lambda kv: int(kv[0]))
    }


def _read_names(path: Path) -> list[Item]:
    items = []
    for line_no, line in text_lines(path):
        index, sep, name = line.partition("::")
        if not sep or not index.strip().isdigit() or not name.strip():
            raise malformed(path, line_no, f"expected `id::artist name`, got {line[:80]!r}")
        if int(index) != len(items):
            raise malformed(path, line_no, f"ids must run 0, 1, 2, ... in order; expected {len(items)}, got {index}")
        items.append(Item(item_id=index.strip(), title=name.strip()))
    return items


def _read_rows(path: Path, split: str, pad: int, history_len: int, min_history: int):
    episodes, count = [], 0
    for line_no, row in json_lines(path):
        count += 1
        seq, target = row.get("seq"), row.get("next")
        if not isinstance(seq, list) or not isinstance(target, int):
            raise malformed(path, line_no, 'expected {"seq": [ints], "next": int, ...}')
        if not all(isinstance(i, int) and 0 <= i <= pad for i in seq) or not 0 <= target < pad:
            raise malformed(path, line_no, f"item ids must lie in [0, {pad}) (padding id {pad})")
        # `len_seq` is unreliable (a user's first row says 1 over an all-padding seq): count items.
        history = tuple(i for i in seq if i != pad)[-history_len:]
        if len(history) < min_history:
            continue
        episodes.append(
            Episode(
                episode_id=f"{split}/{line_no}",
                user_id=None,
                history=history,
                target=target,
                seen=frozenset(history) | {target},
            )
        )
    return episodes, count
