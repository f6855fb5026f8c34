"""Row ids come from one function (core/manifest/schema.py `row_ids`): generate's validation, `fmu
expand`, `fmu score --images --manifest` and `fmu prepare` (its manifests) name the same rows the same way."""

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


def test_a_fallback_fills_blank_ids_before_the_row_number():
    ids = pl.Series(["a", None, "  ", " b ", None], dtype=pl.String)
    stems = pl.Series(["p", "q", " r ", "s", None], dtype=pl.String)
    assert row_ids(ids, 5, fallback=stems).to_list() == ["a", "q", "r", "b", "row000004"]


def test_prepare_names_manifest_rows_by_the_same_rule(tmp_path):
    """A training manifest's ids: its own (trimmed, 0 kept as "0"), else the image's file stem, else
    the row number, as `row_ids` says."""
    from fmu.training.prepare import source_rows

    manifest = tmp_path / "train.csv"
    manifest.write_text("id,image,caption\n a ,x/p.png,one\n,x/q.png,two\n0,s.png,three\n   ,x/t.png,four\n")
    assert [r["id"] for r in source_rows(manifest)] == ["a", "q", "0", "t"]
