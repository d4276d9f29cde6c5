"""Finding and reading dataset files, with errors that name the path (and line) at fault."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

from coars_fast.errors import DataError

DEFAULT_DATA_DIR = Path("~/.cache/coars_fast/data")
PUBLIC_COPIES = "see the README section 'Getting the data' for where each dataset comes from"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """`--data-dir`, else $COARS_FAST_DATA, else ~/.cache/coars_fast/data."""
    chosen = data_dir or os.environ.get("COARS_FAST_DATA") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser()


def find_file(folder: Path, name: str, what: str, required: bool = True) -> Path | None:
    """`folder/name`, or its gzip-compressed `name.gz`; a DataError saying what belongs there."""
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    if not required:
        return None
    raise DataError(
        f"missing data file: looked for {folder / name} (or {name}.gz), which should hold {what}; {PUBLIC_COPIES}"
    )


def read_text(path: Path, encoding: str = "utf-8") -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return f.read().decode(encoding)
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def text_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) for every non-blank line."""
    for number, line in enumerate(read_text(path, encoding).splitlines(), start=1):
        if line.strip():
            yield number, line


def json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON-lines file."""
    for number, line in text_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        yield number, row


def read_json(path: Path):
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


def malformed(path: Path, line: int, problem: str) -> DataError:
    return DataError(f"{path}:{line}: {problem}")
