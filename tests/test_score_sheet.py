"""`fmu score --sheet`: sheet.png, one band per reference (reference, condition, outputs), with each
output's name, prompt and score written under it; histograms with labelled axes."""

import json

import numpy as np
import polars as pl
import pytest
from cli_run import invoke
from PIL import Image

from fmu.core.images import save_png
from fmu.core.scoring.plots import svg_histogram
from fmu.core.scoring.sheet import CELL, GAP, LINE, TEXT_LINES, score_text


@pytest.fixture()
def run_dir(tmp_path, astronaut, photos):
    run = tmp_path / "run"
    hanks = np.asarray(Image.open(photos["tom_hanks.png"]).convert("RGB"))
    save_png(tmp_path / "refs" / "astronaut.png", astronaut)
    save_png(tmp_path / "refs" / "hanks.png", hanks)
    save_png(run / "conditions" / "astro.png", np.full((64, 64, 3), 90, np.uint8))
    save_png(run / "images" / "astro_0.png", astronaut[:, ::-1])
    save_png(run / "images" / "astro_1.png", astronaut)
    save_png(run / "images" / "hanks_0.png", hanks[:, ::-1])
    rows = [dict(id="astro", k=k, status="ok", prompt="an astronaut in a garden", reference=str(tmp_path / "refs" /
                 "astronaut.png"), image=f"images/astro_{k}.png", condition="conditions/astro.png") for k in (0, 1)]
    rows.append(dict(id="hanks", k=0, status="ok", prompt="a man", reference=str(tmp_path / "refs" / "hanks.png"),
                     image="images/hanks_0.png", condition=None))
    pl.DataFrame(rows).write_parquet(run / "results.parquet")
    (run / "run.json").write_text(json.dumps({"face_backend": "dlib", "face_models": None}))
    return run


def _cell(sheet: np.ndarray, band: int, column: int) -> tuple[np.ndarray, np.ndarray]:
    """(the thumbnail square, the text band under it) of one cell."""
    top, left = GAP + band * (CELL + TEXT_LINES * LINE + GAP), GAP + column * (CELL + GAP)
    return sheet[top:top + CELL, left:left + CELL], sheet[top + CELL:top + CELL + TEXT_LINES * LINE, left:left + CELL]


def test_sheet_shows_each_reference_with_its_condition_and_outputs(run_dir, astronaut):
    result = invoke("score", run_dir, "--metrics", "facesim", "--sheet", "--no-report")
    assert result.exit_code == 0, result.output
    sheet = np.asarray(Image.open(run_dir / "sheet.png").convert("RGB")).astype(int)
    # two bands (astronaut, hanks), reference + condition + at most 2 outputs
    assert sheet.shape[:2] == (2 * (CELL + TEXT_LINES * LINE + GAP) + GAP, 4 * (CELL + GAP) + GAP)
    expected = Image.fromarray(astronaut)
    expected.thumbnail((CELL, CELL))
    ref, ref_text = _cell(sheet, 0, 0)
    assert np.abs(ref - np.asarray(expected)).mean() < 3       # the astronaut reference, full cell
    cond, _ = _cell(sheet, 0, 1)
    assert np.abs(cond - 90).max() <= 1                        # the grey condition
    out1, text1 = _cell(sheet, 0, 3)
    assert np.abs(out1 - np.asarray(expected)).mean() < 3      # astro_1 is the reference itself
    assert (text1 < 128).any() and (ref_text < 128).any()      # text written under them
    hanks_cond, hanks_cond_text = _cell(sheet, 1, 1)
    assert (hanks_cond == 255).all() and (hanks_cond_text == 255).all()   # no condition: left blank
    _, empty_text = _cell(sheet, 1, 3)
    assert (empty_text == 255).all()                           # hanks has one output
    scores = pl.read_parquet(run_dir / "scores.parquet").sort("id", "k").to_dicts()
    assert score_text(scores[1]) == f"FaceSim {scores[1]['facesim_dlib']:.3f}"


def test_histograms_label_both_axes():
    svg = svg_histogram([0.1, 0.2, 0.2, 0.9], "facesim_dlib", 0.0, 1.0, x_label="FaceSim (dlib)")
    assert ">FaceSim (dlib)</text>" in svg and ">images</text>" in svg
    assert ">2</text>" in svg   # the y axis's top: the fullest bin's count


def test_grid_cells_carry_the_condition_thumbnail_and_the_prompt():
    from fmu.core.scoring.control_grid import grid_layout, grids_html

    rows = [dict(id=f"a_yaw{y}", k=0, reference="/r/a.png", image=f"/o/a_{y}.png", status="ok",
                 condition=f"/c/a_yaw{y}.png", prompt=f"a <b>face</b> at {y}", yaw=float(y), pitch=None, roll=None,
                 expression=None, light=None, pose_error_deg=2.0, light_error=None) for y in (-30, 30)]
    page = grids_html(grid_layout(rows), lambda path: f"data:{path}" if path else None, 64)
    for y in (-30, 30):
        assert f'<img class="cond" src="data:/c/a_yaw{y}.png"' in page
        assert f"<span class='prompt'>a &lt;b&gt;face&lt;/b&gt; at {y}</span>" in page
