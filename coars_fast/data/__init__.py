"""Datasets as episodes (history -> next item), candidate lists, SASRec and classic baselines."""

from __future__ import annotations

import os
from pathlib import Path

from coars_fast.data import instruments, jsonl, lastfm, movielens, synthetic
from coars_fast.data.dataset import HISTORY_LEN, MIN_HISTORY, Dataset, Episode, Item
from coars_fast.data.files import resolve_data_dir
from coars_fast.data.sources import SOURCES
from coars_fast.errors import DataError

LOADERS = {
    "lastfm": lastfm.load,
    "movielens": movielens.load,
    "instruments": instruments.load,
    "jsonl": jsonl.load,
    "synthetic": None,  # generated, no files (coars_fast/data/synthetic.py)
}
DATASETS = tuple(LOADERS)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    history_len: int = HISTORY_LEN,
    min_history: int = MIN_HISTORY,
    synthetic_settings: synthetic.SyntheticSettings | None = None,
) -> Dataset:
    """Load a dataset by name from `data_dir` (else $COARS_FAST_DATA, else ~/.cache/coars_fast/data);
    `synthetic` is generated from `synthetic_settings` (default: the benchmark's defaults)."""
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if history_len < 1 or min_history < 1:
        raise DataError(f"history_len and min_history must be >= 1, got {history_len} and {min_history}")
    if name == "synthetic":
        return synthetic.generate(synthetic_settings or synthetic.SyntheticSettings(), history_len, min_history)
    folder: Path = resolve_data_dir(data_dir)
    fetch = f"; or fetch it: coars-fast data download --dataset {name}" if name in SOURCES else ""
    if not folder.is_dir():
        raise DataError(
            f"data directory {folder} does not exist. Pass --data-dir or set $COARS_FAST_DATA to the "
            "folder holding lastfm/, movielens/ and instruments/ (see the README section 'Getting the data')" + fetch
        )
    if name != "jsonl" and not (folder / name).is_dir():
        raise DataError(
            f"{folder} has no {name}/ folder: --data-dir (or $COARS_FAST_DATA) must be the folder that "
            f"holds {name}/ (the data root, not {name}/ or a folder inside it){fetch}"
        )
    return LOADERS[name](folder, history_len=history_len, min_history=min_history)


__all__ = ["DATASETS", "Dataset", "Episode", "Item", "load_dataset", "resolve_data_dir"]
