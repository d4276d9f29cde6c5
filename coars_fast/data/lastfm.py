"""LastFM in the LLaRA / AFL preprocessing: rows of (history of up to 10 artists -> next artist).

Folder layout under the data directory: `lastfm/llara/{train,val}.jsonl[.gz]` (test too, if you
have it) and `lastfm/llara/id2name.txt`. The rows carry no user id, so each row is its own "user".
For the user-agent F1 protocol, per-user sequences come from the original HetRec files
(`lastfm/hetrec2011-lastfm-2k/user_taggedartists.dat` ordered by date, `artists.dat` for names),
mapped to LLaRA ids by artist name; without that folder the F1 protocol is unavailable.

Evaluation splits follow the published protocol (LLaRA, AFL, S-DPO: one row per user, the last). A
LLaRA evaluation file holds every prefix of each user's sequence, one row per prefix, users one after
another; consecutive rows chain (a row's history is the previous row's history plus its next item).
`val` (and `test`) keep the last row of each such chain: for the shipped validation file these are
exactly AFL's 122 rows (`val_afl122.jsonl`). `val_all` (`test_all`) keep every row, with the chain as
the user id, so that confidence intervals can be clustered by user.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from coars_fast.data.dataset import HISTORY_LEN, MIN_HISTORY, Dataset, Episode, Item
from coars_fast.data.files import find_file, json_lines, malformed, read_text, text_lines

SPLITS = ("train", "val", "test")
# a HetRec tagging line: user, artist, tag, day, month, year (the tag is not kept)
_TAGGED = re.compile(r"^[ \t]*(\d+)\t(\d+)\t\d+\t(\d+)\t(\d+)\t(\d+)[ \t\r]*$", re.MULTILINE)


def load(data_dir: Path, history_len: int = HISTORY_LEN, min_history: int = MIN_HISTORY) -> Dataset:
    folder = data_dir / "lastfm" / "llara"
    items = _read_names(find_file(folder, "id2name.txt", "LLaRA's `id::artist name` lines"))
    pad = len(items)  # LLaRA right-pads histories with id == number of items
    splits, rows = {}, {}
    for split in SPLITS:
        path = find_file(folder, f"{split}.jsonl", f"the LLaRA {split} rows", required=split != "test")
        if path is None:
            continue
        episodes, rows[path.name] = _read_rows(path, split, pad, history_len, min_history)
        if split == "train":
            splits[split] = episodes
        else:
            splits[f"{split}_all"] = episodes
            splits[split] = _last_per_user(episodes)
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
    tags = find_file(
        folder, "user_taggedartists.dat", "HetRec's `user \\t artist \\t tag \\t day \\t month \\t year` lines"
    )
    # One regex pass over the file (a split and a check per line were most of the loader's time);
    # on a mismatch, the line-by-line pass finds the first bad line for the message.
    text = read_text(tags, "ascii")
    body = text.partition("\n")[2]  # after the header
    rows = _TAGGED.findall(body)
    if len(rows) != sum(1 for line in body.splitlines() if line.strip()):
        for line_no, line in text_lines(tags, "ascii"):
            if line_no > 1 and not _TAGGED.fullmatch(line):
                raise malformed(tags, line_no, f"expected 6 tab-separated numbers, got {line[:80]!r}")
    first_seen: dict[str, dict[int, tuple]] = defaultdict(dict)
    for order, (user, artist, day, month, year) in enumerate(rows):
        item = artist_index.get(artist)
        if item is None:
            continue
        key = (int(year), int(month), int(day), order)  # file order breaks ties within a day
        seen = first_seen[user]
        if item not in seen or key < seen[item]:
            seen[item] = key
    return {
        user: tuple(sorted(seen, key=seen.get)) for user, seen in sorted(first_seen.items(), key=lambda kv: int(kv[0]))
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


def _last_per_user(episodes: list[Episode]) -> list[Episode]:
    """The last row of each user (rows of one user are adjacent)."""
    return [ep for ep, after in zip(episodes, episodes[1:] + [None]) if after is None or after.user_id != ep.user_id]


def _read_rows(path: Path, split: str, pad: int, history_len: int, min_history: int):
    """Episodes of the rows with enough history, and the number of rows. Outside `train`, each
    episode's user id is its chain of consecutive rows (see the module docstring)."""
    episodes, count, users, previous = [], 0, 0, None
    for line_no, row in _json_rows(path):
        count += 1
        seq, target = row.get("seq"), row.get("next")
        if type(seq) is not list or type(target) is not int:
            raise malformed(path, line_no, 'expected {"seq": [ints], "next": int, ...}')
        if (seq and not (set(map(type, seq)) == {int} and 0 <= min(seq) and max(seq) <= pad)) or not 0 <= target < pad:
            raise malformed(path, line_no, f"item ids must lie in [0, {pad}) (padding id {pad})")
        # `len_seq` is unreliable (a user's first row says 1 over an all-padding seq): count items.
        full = tuple(filter(pad.__ne__, seq))
        if previous is None or not full or full != previous[-len(full) :]:
            users += 1  # this row does not continue the previous one: a new user
        previous = full + (target,)
        history = full[-history_len:]
        if len(history) < min_history:
            continue
        episodes.append(
            Episode(
                episode_id=f"{split}/{line_no}",
                user_id=None if split == "train" else f"{split}-user-{users}",
                history=history,
                target=target,
                seen=frozenset((*history, target)),
            )
        )
    return episodes, count


def _json_rows(path: Path):
    """(line number, object) per non-blank line; the whole file parsed as one JSON array (one call
    instead of 50k), line by line only to name a bad line."""
    numbered = [(n, line) for n, line in enumerate(read_text(path).splitlines(), start=1) if line.strip()]
    try:
        rows = json.loads("[" + ",".join(line for _, line in numbered) + "]")
    except json.JSONDecodeError:
        rows = None
    if rows is None or len(rows) != len(numbered) or not all(type(row) is dict for row in rows):
        return json_lines(path)  # raises at the first bad line
    return zip((n for n, _ in numbered), rows)
