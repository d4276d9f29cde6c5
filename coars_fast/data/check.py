"""`coars-fast data check`: the figures of a loaded dataset, to compare with its README."""

from __future__ import annotations

from collections import Counter

from coars_fast.data.dataset import Dataset, title_key


def summarize(dataset: Dataset) -> dict:
    keys = Counter(title_key(item.title) for item in dataset.items)
    titled = dataset.num_items - len(dataset.untitled)
    splits = {}
    for name, episodes in dataset.splits.items():
        lengths = Counter(len(ep.history) for ep in episodes)
        total = sum(lengths.values())
        splits[name] = {
            "episodes": len(episodes),
            "users": len({ep.user_id for ep in episodes}) if episodes and episodes[0].user_id else None,
            "history_len": {
                "min": min(lengths) if lengths else 0,
                "mean": round(sum(k * v for k, v in lengths.items()) / total, 2) if total else 0.0,
                "max": max(lengths) if lengths else 0,
                "counts": dict(sorted(lengths.items())),
            },
        }
    return {
        "dataset": dataset.name,
        "source_rows": dataset.source_rows,
        "users": len(dataset.user_sequences) or None,
        "user_note": dataset.user_note,
        "items": dataset.num_items,
        "titles": {
            "with_title": titled,
            "coverage": round(titled / dataset.num_items, 4) if dataset.num_items else 0.0,
            "duplicate_titles": sum(1 for n in keys.values() if n > 1),
        },
        "splits": splits,
    }


def format_summary(s: dict) -> str:
    users = f"{s['users']:,}" if s["users"] else "n/a (rows carry no user ids: each row is its own user)"
    if s["user_note"]:
        users += f" ({s['user_note']})"
    t = s["titles"]
    lines = [
        f"dataset      {s['dataset']}",
        "source rows  " + ", ".join(f"{name}: {n:,}" for name, n in s["source_rows"].items()),
        f"users        {users}",
        f"items        {s['items']:,}",
        f"titles       {t['with_title']:,} of {s['items']:,} ({100 * t['coverage']:.1f}%), "
        f"{t['duplicate_titles']} titles shared by several items",
        "",
        f"{'split':<7} {'episodes':>9} {'users':>7}  history length: min mean max  (count per length)",
    ]
    for name, sp in s["splits"].items():
        h = sp["history_len"]
        per_len = " ".join(f"{k}:{v}" for k, v in h["counts"].items())
        users = f"{sp['users']:,}" if sp["users"] is not None else "-"
        lines.append(
            f"{name:<7} {sp['episodes']:>9,} {users:>7}  {h['min']:>19} {h['mean']:>5} {h['max']:>3}  ({per_len})"
        )
    return "\n".join(lines)
