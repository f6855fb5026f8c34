"""Read CSV or Parquet manifests into one shape: every known column present, raw values kept.

CSV is read as text so a malformed cell becomes a row error during validation instead of a
failed read; a record that cannot be read at all (a ragged row, a quote that never closes, bytes
that are not UTF-8) becomes a row whose `READ_ERROR` cell says why, and the rest of the file is
read (csv_rows.py). Parquet keeps its types and is cast the same way.

Column names are matched without case or surrounding spaces (`Prompt`, ` prompt`); two columns
that would match the same known name are a usage error: which one was meant cannot be guessed.
"""

from __future__ import annotations

import gc
from pathlib import Path

import polars as pl

from ..errors import UsageError
from .csv_rows import read_csv_rows
from .schema import COLUMNS, READ_ERROR, REQUIRED


def read_manifest(path: Path, required: tuple[str, ...] = REQUIRED) -> pl.DataFrame:
    path = Path(path)
    df = read_table(path)
    df = df.rename(_known_names(df.columns, path.name))
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UsageError(f"manifest {path.name} lacks required column(s): {', '.join(missing)}"
                         f" (has: {', '.join(c for c in df.columns if c != READ_ERROR) or 'none'})")
    return df


def read_table(path: Path, what: str = "manifest") -> pl.DataFrame:
    """A CSV (separator sniffed, text cells, unreadable records as `READ_ERROR` rows) or Parquet
    file, as read; the one reader of every manifest kind (`what` names it in errors: generation,
    training)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a folder; give the CSV or Parquet file in it")
    if not path.is_file():
        raise UsageError(f"{what} not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix in (".csv", ".tsv", ".txt"):
            return _read_csv(path)
        raise UsageError(f"{what} must be .csv, .tsv or .parquet, got {path.name}")
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001  polars raises several exception types for malformed files
        raise UsageError(f"cannot read {what} {path}: {exc}".splitlines()[0]) from None


def _known_names(columns: list[str], name: str) -> dict[str, str]:
    """{column: its known name} for columns that are a known name but for case or spaces."""
    found: dict[str, list[str]] = {}
    for c in columns:
        key = c.strip().lower()
        if key in COLUMNS:
            found.setdefault(key, []).append(c)
    clashes = {k: v for k, v in found.items() if len(v) > 1}
    if clashes:
        listed = "; ".join(" and ".join(repr(c) for c in v) for v in clashes.values())
        raise UsageError(f"manifest {name}: columns {listed} differ only in case or spaces, so fmu cannot "
                         "tell which one to use; rename or remove one of them")
    return {v[0]: k for k, v in found.items() if v[0] != k}


def _read_csv(path: Path) -> pl.DataFrame:
    """polars when the whole file is well-formed UTF-8 CSV; else the record-by-record reader."""
    separator = _sniff_separator(path)
    try:
        return pl.read_csv(path, infer_schema=False, separator=separator, truncate_ragged_lines=False)
    except Exception:  # noqa: BLE001  polars' errors name no line: read it again, record by record
        pass
    # a million small lists: the cyclic GC would walk them again and again while they are made
    # (3x the parse time here); none of them can form a cycle
    paused = gc.isenabled()
    gc.disable()
    try:
        header, records, problems = read_csv_rows(path.read_bytes(), separator, str(path))
        if len(set(header)) != len(header):
            raise UsageError(f"cannot read manifest {path}: its header repeats a column name")
        table = pl.DataFrame(records, schema=dict.fromkeys(header, pl.String), orient="row")
        del records
    finally:
        if paused:
            gc.enable()
    return table.with_columns(pl.Series(READ_ERROR, problems, dtype=pl.String))


def _sniff_separator(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        header = fh.readline()
    counts = {sep: header.count(sep) for sep in (",", "\t", ";", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else ","
