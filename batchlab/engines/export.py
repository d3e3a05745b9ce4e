"""A Result's records as others read them: rows with `status` as a word, a pandas DataFrame,
a Parquet file.

pandas and pyarrow are optional (`pip install 'batchlab[pandas]'`): they are imported only
here, inside the functions that need them, and their absence is a ConfigError that names the
extra, not a bare ModuleNotFoundError.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import ConfigError
from ..core.table import RECORD_DTYPE, STATUS_NAMES

COLUMNS = RECORD_DTYPE.names


def record_rows(records: np.ndarray) -> list[tuple]:
    """The records as plain tuples in COLUMNS order, `status` as its name ("finished",
    "rejected", "aborted", ...): a number means nothing to someone reading a CSV."""
    status = COLUMNS.index("status")
    rows = []
    for row in records.tolist():
        row = list(row)
        row[status] = STATUS_NAMES.get(row[status], str(row[status]))
        rows.append(tuple(row))
    return rows


def _require(module: str, what: str):
    try:
        return __import__(module)
    except ModuleNotFoundError:
        raise ConfigError(f"{what} needs {module}, which is not installed: "
                          "pip install 'batchlab[pandas]' (pandas and pyarrow)") from None


def to_pandas(records: np.ndarray):
    """One row per request, RECORD_DTYPE's columns; `status` is a categorical of names."""
    pd = _require("pandas", "Result.to_pandas()")
    frame = pd.DataFrame({name: records[name] for name in COLUMNS})
    frame["status"] = pd.Categorical([STATUS_NAMES.get(int(s), str(s))
                                      for s in records["status"]],
                                     categories=list(STATUS_NAMES.values()))
    return frame


def to_parquet(records: np.ndarray, path) -> Path:
    """Write the records (as `to_pandas` gives them) to a Parquet file."""
    frame = to_pandas(records)
    _require("pyarrow", "writing Parquet")
    path = Path(path)
    frame.to_parquet(path, index=False)
    return path
