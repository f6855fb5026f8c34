"""core/tables.py: a table is written whole or not at all."""

import os

import polars as pl
import pytest

from fmu.core.tables import write_table


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_table_is_replaced_whole_and_read_back_equal(tmp_path):
    path = tmp_path / "sub" / "t.parquet"
    first = pl.DataFrame({"id": ["a", "b"], "x": [1.5, None]})
    write_table(path, first)
    assert pl.read_parquet(path).equals(first)
    second = pl.DataFrame({"id": ["c"], "x": [2.0]})
    write_table(path, second)
    assert pl.read_parquet(path).equals(second) and not _leftovers(path.parent)


def test_a_failed_write_leaves_the_earlier_table_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    old = pl.DataFrame({"id": ["a"]})
    write_table(path, old)

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_table(path, pl.DataFrame({"id": ["new"]}))
    assert pl.read_parquet(path).equals(old) and not _leftovers(tmp_path)
