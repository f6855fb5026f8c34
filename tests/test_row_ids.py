"""Row ids come from one function (core/manifest/schema.py `row_ids`): generate's validation, `fmu
expand` and `fmu score --images --manifest` name the same rows the same way."""

from __future__ import annotations

import polars as pl

from fmu.core.manifest import read_manifest, validate
from fmu.core.manifest.expand import expand_manifest
from fmu.core.manifest.schema import row_ids
from fmu.core.scoring.inputs import read_manifest as read_for_scoring


def test_missing_or_blank_ids_become_the_row_number():
    ids = pl.Series(["a", None, "  ", " b ", ""], dtype=pl.String)
    assert row_ids(ids, 5).to_list() == ["a", "row000001", "row000002", "b", "row000004"]
    assert row_ids(None, 2).to_list() == ["row000000", "row000001"]
    assert row_ids(pl.Series([7, None]), 2).to_list() == ["7", "row000001"]   # numbers read as text
    assert row_ids(ids, 5).name == "id" and row_ids(None, 0).to_list() == []


def test_validate_expand_and_score_name_rows_alike(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,reference,prompt\na,x.png,one\n,x.png,two\n b ,x.png,three\n   ,x.png,four\n")
    want = ["a", "row000001", "b", "row000003"]
    checked = validate(read_manifest(manifest), tmp_path, check_files=False)
    assert checked.id_series.to_list() == want
    assert read_for_scoring(manifest)["id"].to_list() == want
    expanded = expand_manifest(manifest, {"yaw": [0.0, 10.0]}, tmp_path / "grid.csv")
    assert [i.rsplit("_", 1)[0] for i in expanded["id"].to_list()] == [w for w in want for _ in (0, 1)]
