"""LastFM in the LLaRA / AFL preprocessing: rows of (history of up to 10 artists -> next artist).

Folder layout under the data directory: `lastfm/llara/{train,val}.jsonl[.gz]` (test too, if you
have it) and `lastfm/llara/id2name.txt`. The rows carry no user id, so each row is its own "user".
"""

from __future__ import annotations

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
    return Dataset(name="lastfm", items=items, splits=splits, source_rows=rows)


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
