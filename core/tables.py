"""Writing tables atomically: every Parquet file fmu leaves (results, scores, training
manifests) is written whole or not at all, so a reader or a resumed run never sees half a table."""

from __future__ import annotations

import io
import os

import polars as pl

from .images import atomic_write_bytes


def write_table(path: str | os.PathLike, table: pl.DataFrame) -> None:
    """`table` as Parquet at `path`, replacing any earlier file in one rename."""
    buf = io.BytesIO()
    table.write_parquet(buf)
    atomic_write_bytes(path, buf.getvalue())
