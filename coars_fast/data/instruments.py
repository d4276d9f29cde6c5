"""Amazon 2018 Musical Instruments 5-core in the LC-Rec form, split leave-last-out.

Folder layout under the data directory: `instruments/lcrec-amazon2018-5core/` holding
`Instruments.inter.json[.gz]` ({"user idx": [item idx, ...]}, oldest first),
`Instruments.item2id[.gz]` (`ASIN \\t item idx`) and, optionally, LC-Rec's `Instruments.item.json`
({"item idx": {"title": ..., ...}}). Without the latter the agents see ASINs instead of titles.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from coars_fast.data.dataset import HISTORY_LEN, MIN_HISTORY, Dataset, Item, leave_last_out
from coars_fast.data.files import find_file, malformed, read_json, text_lines
from coars_fast.errors import DataError


def load(data_dir: Path, history_len: int = HISTORY_LEN, min_history: int = MIN_HISTORY) -> Dataset:
    folder = data_dir / "instruments" / "lcrec-amazon2018-5core"
    inter_path = find_file(folder, "Instruments.inter.json", 'LC-Rec\'s {"user idx": [item idx, ...]} sequences')
    asins = _read_asins(find_file(folder, "Instruments.item2id", "LC-Rec's `ASIN \\t item idx` lines"))
    meta_path = find_file(folder, "Instruments.item.json", "item titles", required=False)
    meta = read_json(meta_path) if meta_path else {}
    if not meta:
        warnings.warn(
            f"no Instruments.item.json in {folder}: the agents will see ASINs instead of item titles "
            "(LC-Rec's title file; see the README section 'Getting the data')",
            stacklevel=2,
        )
    items, untitled = [], set()
    for index, asin in enumerate(asins):
        entry = meta.get(str(index)) or {}
        title = str(entry.get("title") or "").strip()
        if not title:
            untitled.add(index)
        attrs = {k: v for k, v in entry.items() if k != "title"} if isinstance(entry, dict) else {}
        items.append(Item(item_id=asin, title=title or asin, attrs=attrs))

    raw = read_json(inter_path)
    if not isinstance(raw, dict):
        raise DataError(f"{inter_path}: expected a JSON object of user idx -> item list")
    sequences = {}
    for user, seq in raw.items():
        if not isinstance(seq, list) or not all(isinstance(i, int) and 0 <= i < len(items) for i in seq):
            raise DataError(f"{inter_path}: user {user!r}: expected a list of item indices in [0, {len(items)})")
        sequences[user] = tuple(seq)
    return Dataset(
        name="instruments",
        items=items,
        splits=leave_last_out(sequences, history_len, min_history),
        user_sequences=sequences,
        source_rows={inter_path.name: sum(len(s) for s in sequences.values())},
        untitled=frozenset(untitled),
    )


def _read_asins(path: Path) -> list[str]:
    by_index = {}
    for line_no, line in text_lines(path, "ascii"):
        fields = line.split("\t")
        if len(fields) != 2 or not fields[1].strip().isdigit():
            raise malformed(path, line_no, f"expected `ASIN \\t item idx`, got {line[:80]!r}")
        by_index[int(fields[1])] = fields[0].strip()
    if sorted(by_index) != list(range(len(by_index))):
        raise DataError(f"{path}: item indices must run 0..{len(by_index) - 1} without gaps")
    return [by_index[i] for i in range(len(by_index))]
