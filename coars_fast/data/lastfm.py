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
    for line_no, row in json_lines(path):
        count += 1
        seq, target = row.get("seq"), row.get("next")
        if not isinstance(seq, list) or not isinstance(target, int):
            raise malformed(path, line_no, 'expected {"seq": [ints], "next": int, ...}')
        if not all(isinstance(i, int) and 0 <= i <= pad for i in seq) or not 0 <= target < pad:
            raise malformed(path, line_no, f"item ids must lie in [0, {pad}) (padding id {pad})")
        # `len_seq` is unreliable (a user's first row says 1 over an all-padding seq): count items.
        full = tuple(i for i in seq if i != pad)
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
                seen=frozenset(history) | {target},
            )
        )
    return episodes, count
