"""report.html renders in real headless Chromium: every embedded image decodes, and the page
is not blank. CI installs Debian's chromium (`apt-get install -y chromium`); without it the
test skips locally and fails under CI=true."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import polars as pl
import pytest
from PIL import Image

from fmu.core.images import save_png
from fmu.core.scoring import ScoreOptions, score_run


def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI must run: apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return path


def _run_chromium(tmp_path, *args) -> str:
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def _loaded(dom: str) -> tuple[int, int]:
    m = re.search(r'id="img-check" data-loaded="(\d+)" data-total="(\d+)"', dom)
    assert m, "the page's image check did not run"
    return int(m[1]), int(m[2])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    import skimage.data

    astronaut = skimage.data.astronaut()
    root = tmp_path_factory.mktemp("report")
    run = root / "run"
    save_png(root / "ref.png", astronaut)
    save_png(run / "images" / "a_0.png", astronaut[:, ::-1])
    save_png(run / "images" / "a_1.png", np.full((512, 512, 3), 128, np.uint8))     # no face
    (run / "images" / "a_2.png").write_bytes(b"not an image")                        # corrupt
    cond = np.zeros((512, 512, 3), np.uint8)
    cond[128:384, 160:352] = 200                                                      # a stand-in render
    save_png(run / "conditions" / "a.png", cond)
    pl.DataFrame([dict(id="a", k=k, status="ok", error=None, seed=k, prompt="an astronaut",
                       reference=str(root / "ref.png"),
                       target=None, image=f"images/a_{k}.png", condition="conditions/a.png") for k in range(3)]
                 ).write_parquet(run / "results.parquet")
    (run / "run.json").write_text(json.dumps({"face_backend": "dlib", "face_models": None}))
    score_run(run, ScoreOptions(metrics=("facesim",), sheet=True))
    return run / "report.html"


def test_every_image_loads(report, tmp_path):
    html = report.read_text()
    n_img = len(re.findall(r"<img ", html))
    assert n_img == 4    # reference, condition, two readable outputs (the corrupt one has none)
    assert _loaded(_run_chromium(tmp_path, "--dump-dom", report.as_uri())) == (n_img, n_img)

    # the check can fail: one broken data URI is counted as not loaded
    broken = tmp_path / "broken.html"
    first = re.search(r'src="(data:image/jpeg;base64,[^"]+)"', html)[1]
    broken.write_text(html.replace(first, "data:image/jpeg;base64,AAAAAAAA", 1))
    assert _loaded(_run_chromium(tmp_path, "--dump-dom", broken.as_uri())) == (n_img - 1, n_img)


def test_screenshot_shows_the_images(report, tmp_path):
    shot = tmp_path / "shot.png"
    _run_chromium(tmp_path, "--window-size=1200,1400", f"--screenshot={shot}", report.as_uri())
    px = np.asarray(Image.open(shot).convert("RGB")).astype(np.int32)
    assert px.std() > 20                                   # not a blank page
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    suit = (r > 170) & (g > 50) & (g < 140) & (b < 90)     # the astronaut's orange suit
    assert suit.sum() > 2000
    bars = (abs(r - 0x3B) < 12) & (abs(g - 0x7D) < 12) & (abs(b - 0xD8) < 12)   # histogram bars / ref outline
    assert bars.sum() > 50


def test_contact_sheet_screenshot_shows_reference_condition_and_outputs(report, tmp_path):
    """sheet.png as a browser shows it: the astronaut (reference and the mirrored output), the
    condition's bright block, and the text under the cells."""
    sheet = report.parent / "sheet.png"
    shot = tmp_path / "sheet-shot.png"
    _run_chromium(tmp_path, "--window-size=1000,500", f"--screenshot={shot}", sheet.as_uri())
    px = np.asarray(Image.open(shot).convert("RGB")).astype(np.int32)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    suit = (r > 170) & (g > 50) & (g < 140) & (b < 90)
    assert suit.sum() > 1500                               # two astronaut thumbnails
    grey = (abs(r - 200) < 6) & (abs(g - 200) < 6) & (abs(b - 200) < 6)
    assert grey.sum() > 1000                               # the condition's block
    white = (r > 250) & (g > 250) & (b > 250)              # the sheet (the viewer's background is dark)
    rows, cols = np.nonzero(white)
    inside = px[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert (inside.max(axis=-1) < 80).sum() > 200          # names, prompts and scores written on it
