"""Read CSV or Parquet manifests into one shape: every known column present, raw values kept.

CSV is read as text so a malformed cell becomes a row error during validation instead of a
failed read; Parquet keeps its types and is cast the same way.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ..errors import UsageError
from .schema import REQUIRED


def read_manifest(path: Path, required: tuple[str, ...] = REQUIRED) -> pl.DataFrame:
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"manifest {path} is a folder; give the CSV or Parquet file in it")
    if not path.is_file():
        raise UsageError(f"manifest not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pl.read_parquet(path)
        elif suffix in (".csv", ".tsv", ".txt"):
            df = pl.read_csv(path, infer_schema=False, separator=_sniff_separator(path),
                             truncate_ragged_lines=False)
        else:
            raise UsageError(f"manifest must be .csv, .tsv or .parquet, got {path.name}")
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001  polars raises several exception types for malformed files
        raise UsageError(f"cannot read manifest {path}: {exc}".splitlines()[0]) from None
    df = df.rename({c: c.strip().lower() for c in df.columns})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UsageError(f"manifest {path.name} lacks required column(s): {', '.join(missing)}"
                         f" (has: {', '.join(df.columns) or 'none'})")
    return df


def _sniff_separator(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        header = fh.readline()
    counts = {sep: header.count(sep) for sep in (",", "\t", ";", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else ","
