"""Reading the pandas DataFrame pickles that LLaRA/AFL publish, without running their code.

A pickle names functions that loading calls: from the internet it is a program. This unpickler
admits exactly the pandas and numpy names that rebuild a plain DataFrame of numbers and lists (the
set the published LastFM pickles use) and refuses any other with one line; callers also unpickle
only bytes whose SHA-256 was verified first (download.py)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

from coars_fast.errors import DataError

ALLOWED = frozenset(
    {
        ("pandas.core.frame", "DataFrame"),
        ("pandas", "DataFrame"),  # the same classes under the public names newer pandas pickles use
        ("pandas", "Index"),
        ("pandas", "RangeIndex"),
        ("pandas.core.internals.managers", "BlockManager"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas.core.indexes.base", "Index"),
        ("pandas.core.indexes.range", "RangeIndex"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "slice"),
    }
)


class _DataFrameUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: not part of a plain DataFrame")
        with warnings.catch_warnings():  # numpy 2 warns about its numpy.core alias
            warnings.simplefilter("ignore")
            return super().find_class(module, name)


def load_dataframe(path: Path):
    """The DataFrame pickled in `path`, through the restricted unpickler."""
    try:
        import pandas  # noqa: F401 (the DataFrame classes the pickle names)
    except ImportError:
        raise DataError(f"{path.name} is a pandas pickle: converting it needs pandas (pip install pandas)") from None
    try:
        with open(path, "rb") as f:
            return _DataFrameUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as err:
        raise DataError(f"{path}: not a plain DataFrame pickle ({err})") from None
