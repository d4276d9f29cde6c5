"""MovieLens-100K: each user's ratings ordered by time, split leave-last-out.

Folder layout under the data directory: `movielens/ml-100k/u.data[.gz]` and `u.item[.gz]`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from coars_fast.data.dataset import HISTORY_LEN, MIN_HISTORY, Dataset, Item, leave_last_out
from coars_fast.data.files import find_file, malformed, text_lines

GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


def load(data_dir: Path, history_len: int = HISTORY_LEN, min_history: int = MIN_HISTORY) -> Dataset:
    folder = data_dir / "movielens" / "ml-100k"
    items, index_of = _read_movies(find_file(folder, "u.item", "the `|`-separated movie list of ml-100k"))
    ratings = find_file(folder, "u.data", "the tab-separated ratings of ml-100k")
    events = defaultdict(list)
    for line_no, line in text_lines(ratings, "ascii"):
        fields = line.split("\t")
        if len(fields) != 4 or not all(f.strip().isdigit() for f in fields):
            raise malformed(ratings, line_no, f"expected `user \\t item \\t rating \\t timestamp`, got {line[:80]!r}")
        user, movie, rating, timestamp = fields
        if movie not in index_of:
            raise malformed(ratings, line_no, f"movie id {movie} is not in u.item")
        events[user].append((int(timestamp), index_of[movie], int(rating)))
    total = sum(len(e) for e in events.values())
    sequences = {}
    for user in sorted(events, key=int):
        # Ties in time keep the file's order (sort is stable), so the split is reproducible.
        sequences[user] = tuple(item for _, item, _ in sorted(events[user], key=lambda e: e[0]))
    splits = leave_last_out(sequences, history_len, min_history)
    return Dataset(
        name="movielens",
        items=items,
        splits=splits,
        user_sequences=sequences,
        source_rows={ratings.name: total},
    )


def _read_movies(path: Path) -> tuple[list[Item], dict[str, int]]:
    items, index_of = [], {}
    for line_no, line in text_lines(path, "latin-1"):
        fields = line.split("|")
        if len(fields) != 5 + len(GENRES) or not fields[0].isdigit():
            raise malformed(path, line_no, f"expected 24 `|`-separated fields, got {len(fields)}")
        genres = [name for name, flag in zip(GENRES, fields[5:]) if flag.strip() == "1"]
        index_of[fields[0]] = len(items)
        items.append(Item(item_id=fields[0], title=fields[1].strip(), attrs={"genres": genres}))
    return items, index_of
