"""The generic format for bringing your own data: a folder with two JSON-lines files.

`items.jsonl`: one object per item, `{"item_id": "...", "title": "...", ...}`; every other field is
kept as an item attribute. `sequences.jsonl`: one object per user, `{"user_id": "...", "items":
["item_id", ...]}` oldest first, with optional `"timestamps"` (one number per item; the items are then
ordered by them). Users are split leave-last-out, like MovieLens. Select with
`--dataset jsonl --data-dir FOLDER`. An optional `meta.json`, `{"item_noun": "book", "user_verb":
"read"}`, tells the agents' prompts what an item is and what users did with one (default: "item",
"interacted with").
"""

from __future__ import annotations

import json
from pathlib import Path

from coars_fast.data.dataset import HISTORY_LEN, MIN_HISTORY, Dataset, Item, leave_last_out
from coars_fast.data.files import find_file, json_lines, malformed
from coars_fast.errors import DataError


def load(data_dir: Path, history_len: int = HISTORY_LEN, min_history: int = MIN_HISTORY) -> Dataset:
    items_path = find_file(data_dir, "items.jsonl", 'one {"item_id": ..., "title": ...} object per line')
    seq_path = find_file(data_dir, "sequences.jsonl", 'one {"user_id": ..., "items": [...]} object per line')
    items, index_of = [], {}
    for line_no, row in json_lines(items_path):
        item_id, title = row.get("item_id"), row.get("title")
        if not isinstance(item_id, str) or not item_id:
            raise malformed(items_path, line_no, '"item_id" must be a non-empty string')
        if not isinstance(title, str) or not title.strip():
            raise malformed(items_path, line_no, '"title" must be a non-empty string')
        if item_id in index_of:
            raise malformed(items_path, line_no, f"duplicate item_id {item_id!r}")
        index_of[item_id] = len(items)
        attrs = {k: v for k, v in row.items() if k not in ("item_id", "title")}
        items.append(Item(item_id=item_id, title=title.strip(), attrs=attrs))

    sequences, total = {}, 0
    for line_no, row in json_lines(seq_path):
        user_id, seq, stamps = row.get("user_id"), row.get("items"), row.get("timestamps")
        if not isinstance(user_id, str) or not user_id:
            raise malformed(seq_path, line_no, '"user_id" must be a non-empty string')
        if user_id in sequences:
            raise malformed(seq_path, line_no, f"duplicate user_id {user_id!r}")
        if not isinstance(seq, list) or not seq:
            raise malformed(seq_path, line_no, '"items" must be a non-empty list of item ids')
        unknown = [i for i in seq if i not in index_of]
        if unknown:
            raise malformed(seq_path, line_no, f"item ids not in items.jsonl: {unknown[:5]}")
        if stamps is not None:
            if (
                not isinstance(stamps, list)
                or len(stamps) != len(seq)
                or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in stamps)
            ):
                raise malformed(seq_path, line_no, '"timestamps" must be one number per item')
            seq = [i for _, i in sorted(zip(stamps, seq), key=lambda pair: pair[0])]
        sequences[user_id] = tuple(index_of[i] for i in seq)
        total += len(seq)
    if not sequences:
        raise DataError(f"{seq_path}: no user sequences")
    noun, verb = _wording(data_dir)
    return Dataset(
        name="jsonl",
        item_noun=noun,
        user_verb=verb,
        items=items,
        splits=leave_last_out(sequences, history_len, min_history),
        user_sequences=sequences,
        source_rows={seq_path.name: total},
    )


WORDING_KEYS = ("item_noun", "user_verb")


def _wording(data_dir: Path) -> tuple[str, str]:
    """(item noun, user verb) from the folder's optional meta.json ("", "" without one)."""
    path = data_dir / "meta.json"
    if not path.is_file():
        return "", ""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({getattr(err, 'msg', err)})") from None
    if not isinstance(meta, dict):
        raise DataError(f'{path}: must be an object like {{"item_noun": "book", "user_verb": "read"}}')
    unknown = sorted(set(meta) - set(WORDING_KEYS))
    if unknown:
        raise DataError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(WORDING_KEYS)}")
    for key, value in meta.items():
        if not isinstance(value, str) or not value.strip() or "\n" in value:
            raise DataError(f"{path}: {key!r} must be a short non-empty string on one line, got {value!r}")
    return meta.get("item_noun", "").strip(), meta.get("user_verb", "").strip()
