"""Several people in a manifest row (core/manifest/people_layout.py): `reference` / `target` lists,
`layout` boxes, and the per-row errors validation gives them."""

from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from fmu.core.boxes import pixel_box
from fmu.core.manifest import validate
from fmu.core.manifest.people_layout import (
    MAX_OVERLAP,
    LayoutError,
    auto_boxes,
    canonical_layout,
    overlap,
    parse_layout,
)


def test_auto_layout_is_equal_columns_left_to_right():
    assert auto_boxes(3) == [(0, 0, 1 / 3, 1), (1 / 3, 0, 2 / 3, 1), (2 / 3, 0, 1, 1)]
    assert parse_layout(None, 2) == parse_layout("auto", 2) == parse_layout(" AUTO ", 2) == auto_boxes(2)
    assert parse_layout("0.1,0.2,0.5,0.9 | 0.5,0,1,1", 2) == [(0.1, 0.2, 0.5, 0.9), (0.5, 0.0, 1.0, 1.0)]
    assert pixel_box((0.25, 0.5, 0.75, 1.0), 512, 256) == (128, 128, 384, 256)


@pytest.mark.parametrize("layout, n, kind, words", [
    ("0,0,0.5", 1, "bad_layout", "box 1 '0,0,0.5' is not x0,y0,x1,y1"),
    ("0,0,a,1", 1, "bad_layout", "box 1"),
    ("0,0,nan,1", 1, "bad_layout", "box 1"),
    ("0,0,0.5,1|0.5,0,1.2,1", 2, "box_outside", "box 2 (0.5,0,1.2,1) is not inside the image"),
    ("0.5,0,0.4,1", 1, "box_outside", "box 1"),
    ("-0.1,0,0.5,1", 1, "box_outside", "box 1"),
    ("0,0,0.05,1", 1, "box_too_small", "narrower or shorter than 0.1"),
    ("0,0,0.5,1", 2, "layout_mismatch", "1 box(es) for 2 people"),
    ("0,0,0.6,1|0.4,0,1,1", 2, "box_overlap", "boxes 1 and 2 overlap by 33%"),
])
def test_bad_layouts_say_which_box_and_why(layout, n, kind, words):
    with pytest.raises(LayoutError) as info:
        parse_layout(layout, n)
    assert info.value.kind == kind and words in str(info.value)


def test_overlap_is_a_share_of_the_smaller_box_and_the_limit_is_inclusive():
    assert overlap((0, 0, 0.5, 1), (0.25, 0, 1, 1)) == pytest.approx(0.25 * 1 / 0.5)
    assert overlap((0, 0, 0.5, 1), (0.5, 0, 1, 1)) == 0
    # exactly at the limit is allowed: one box covering a quarter of the other's area
    share = MAX_OVERLAP * 0.5
    assert parse_layout(f"0,0,0.5,1|{0.5 - share},0,1,1", 2)


def test_one_person_rows_stay_ordinary_unless_placed():
    assert canonical_layout("a.png", None) is None
    assert canonical_layout("a.png", "auto") is None
    assert canonical_layout("a.png", "0.25,0.25,0.75,0.75") == "0.25,0.25,0.75,0.75"
    assert canonical_layout("a.png|b.png", None) == "0,0,0.5,1|0.5,0,1,1"


@pytest.fixture()
def folder(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png", "e.png"):
        Image.new("RGB", (64, 64)).save(tmp_path / name)
    return tmp_path


def _validate(folder: Path, rows: list[dict]):
    columns = ("reference", "prompt", "layout", "target")
    df = pl.DataFrame({c: [r.get(c) for r in rows] for c in columns}, schema={c: pl.String for c in columns})
    return validate(df.with_columns(prompt=pl.lit("p")), folder)


def test_validation_names_the_person_and_keeps_the_good_rows(folder):
    v = _validate(folder, [
        {"reference": "a.png"},                                              # 0 one person, as before
        {"reference": "a.png|b.png"},                                        # 1 two people, auto
        {"reference": "a.png|b.png|c.png|d.png|e.png"},                      # 2 five people
        {"reference": "a.png|gone.png"},                                     # 3 person 2's file is missing
        {"reference": "a.png|b.png", "layout": "0,0,0.5,1|0.5,0,1.5,1"},     # 4 box outside the image
        {"reference": "a.png|b.png", "target": "c.png"},                     # 5 one target for two people
        {"reference": "a.png||b.png"},                                       # 6 an empty person
        {"reference": "a.png|b.png", "target": "|c.png"},                    # 7 a target for person 2 only
        {"reference": "a.png", "layout": "0.2,0.2,0.8,0.8"},                 # 8 one person placed in a box
        {"reference": "a.png|b.png", "target": "c.png|gone.png"},            # 9 person 2's target missing
        {"reference": "a.png|http://x/b.png"},                               # 10 a URL
    ])
    found = {(p.row, p.column, p.kind): p.message for p in v.problems}
    assert found == {
        (2, "reference", "too_many_people"): "5 people in reference; at most 4 per image",
        (3, "reference", "missing_file"): f"reference[2]: file not found: {folder / 'gone.png'}",
        (4, "layout", "box_outside"): "layout box 2 (0.5,0,1.5,1) is not inside the image: need 0 <= x0 < x1 "
                                      "<= 1 and 0 <= y0 < y1 <= 1",
        (5, "target", "people_mismatch"): "target has 1 path(s) for 2 people in reference (give one target per "
                                          "person, an empty part for none)",
        (6, "reference", "missing_reference"): "reference[2] is empty",
        (9, "target", "missing_file"): f"target[2]: file not found: {folder / 'gone.png'}",
        (10, "reference", "url_not_supported"): "reference[2]: reference 'http://x/b.png' is a URL; download it "
                                                "and give a path",
    }
    table = {r["row"]: r for r in v.table.to_dicts()}
    assert sorted(table) == [0, 1, 7, 8]
    assert table[0]["reference"] == str(folder / "a.png") and table[0]["layout"] is None
    assert table[1]["reference"] == f"{folder / 'a.png'}|{folder / 'b.png'}"
    assert table[1]["layout"] == "0,0,0.5,1|0.5,0,1,1"
    assert table[7]["target"] == f"|{folder / 'c.png'}"
    rows = {r.index: r for r in v.rows}
    assert rows[0].people == ()
    two = rows[7].people
    assert [(p.reference, p.target, p.box) for p in two] == [
        (folder / "a.png", None, (0.0, 0.0, 0.5, 1.0)), (folder / "b.png", folder / "c.png", (0.5, 0.0, 1.0, 1.0))]
    assert [(p.reference, p.box) for p in rows[8].people] == [(folder / "a.png", (0.2, 0.2, 0.8, 0.8))]


def test_one_person_manifests_validate_as_before(folder):
    """No `|` and no layout: the table is the one of before, plus an all-null layout column."""
    v = _validate(folder, [{"reference": "a.png"}, {"reference": "b.png", "target": "c.png"}])
    assert v.ok and v.table["layout"].null_count() == 2
    assert v.table["reference"].to_list() == [str(folder / "a.png"), str(folder / "b.png")]
    assert v.table["target"].to_list() == [None, str(folder / "c.png")]
