"""DATA/preview.html: masks drawn where they are (checked on the pixels), and the page rendered in
real headless Chromium (like the score report's test: CI installs Debian's chromium)."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from test_report_chromium import _loaded, _run_chromium

from fmu.training.preview import ALPHA, PALETTE, overlay, sample_rows, zoom_box


def test_overlay_tints_and_outlines_exactly_the_mask(astronaut):
    mask = np.zeros(astronaut.shape[:2], bool)
    mask[100:180, 200:260] = True
    second = np.zeros_like(mask)
    second[300:340, 50:90] = True
    out = overlay(astronaut, [mask, second], side=512).astype(np.float64)  # 512: no resize
    rim = mask & ~ndimage.binary_erosion(mask)
    inner = mask & ~rim
    expected = np.clip(np.float32(1 - ALPHA) * astronaut.astype(np.float32)
                       + np.float32(ALPHA) * np.float32(PALETTE[0]), 0, 255)
    np.testing.assert_allclose(out[inner], np.floor(expected[inner]), atol=1)
    assert (out[rim] == PALETTE[0]).all() and (out[second & ~ndimage.binary_erosion(second)] == PALETTE[1]).all()
    untouched = ~(mask | second)
    np.testing.assert_array_equal(out[untouched], astronaut[untouched])


def test_sample_and_zoom():
    assert sample_rows(5) == [0, 1, 2, 3, 4]
    big = sample_rows(1000)
    assert len(big) == 60 and big[0] == 0 and big[-1] == 999 and big == sorted(set(big))
    small = np.zeros((400, 600), bool)
    small[100:140, 300:330] = True
    x1, y1, x2, y2 = zoom_box([small], small.shape)
    assert x2 - x1 == y2 - y1 and x1 <= 300 and x2 >= 330 and y1 <= 100 and y2 >= 140
    assert zoom_box([np.ones((400, 600), bool)], (400, 600)) is None and zoom_box([], (4, 4)) is None


@pytest.fixture(scope="module")
def preview(tmp_path_factory, photos):
    from fmu.training.prepare import PrepareConfig, run_prepare

    root = tmp_path_factory.mktemp("preview")
    src = root / "src"
    src.mkdir()
    shutil.copy(photos["astronaut.png"], src / "astronaut.png")
    (src / "astronaut.txt").write_text("a woman with red lips, short brown hair and <b>blue</b> eyes in a suit")
    shutil.copy(photos["tom_hanks.png"], src / "hanks.png")
    run_prepare(PrepareConfig(source=src, out=root / "data", resolution=64))
    return root / "data" / "preview.html"


def test_preview_lists_phrases_and_reasons(preview):
    page = preview.read_text()
    assert "short brown hair" in page and "red lips" in page
    assert "<b>blue</b>" not in page and "&lt;b&gt;blue&lt;/b&gt; eyes" in page   # the caption is escaped
    assert "suit: not_supported: the mesh parser has no clothes region" in page
    assert page.count("<img ") == 3                                 # astronaut + its zoom, hanks (no masks: no zoom)


def test_preview_renders_in_chromium(preview, tmp_path):
    n_img = len(re.findall(r"<img ", preview.read_text()))
    assert _loaded(_run_chromium(tmp_path, "--dump-dom", preview.as_uri())) == (n_img, n_img)
    shot = tmp_path / "shot.png"
    _run_chromium(tmp_path, "--window-size=1000,1400", f"--screenshot={shot}", preview.as_uri())
    px = np.asarray(Image.open(shot).convert("RGB")).astype(np.int32)
    assert px.std() > 20
    # the hair (second phrase) is tinted green (PALETTE[1]): the photo itself has no such pixel, and the legend's
    # swatch is 12 x 12, so the overlay is what shows them
    assert PALETTE[1] == (60, 180, 75)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    assert ((g > r + 25) & (g > b + 25)).sum() > 10 * 144
