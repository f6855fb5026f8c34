"""The report and the demo's scoring example: a row's target is shown next to its reference, a
histogram never draws "no face" as a bar, a metric without weights says what is missing in one line
of fmu's own, and `fmu demo-inputs` leaves real photos on which `fmu score` measures FaceSim."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest

from fmu.core.images import load_rgb, save_png
from fmu.core.scoring.plots import svg_histogram
from fmu.core.scoring.report import render_report, thumbnail_uri
from fmu.core.scoring.weights import MetricUnavailable, from_pretrained_local


def test_no_face_is_a_note_under_the_histogram_not_a_bar():
    svg = svg_histogram([0.1, 0.5, 0.52, 0.9], "facesim", 0.0, 1.0, bins=10, left_out=("no face", 3))
    assert svg.count("<rect") == 10                       # the bins, nothing beside them
    assert "not plotted: 3 with no face (0 in the strict mean)" in svg
    heights = [float(h) for h in re.findall(r'height="([\d.]+)" fill="#3b7dd8"', svg)]
    assert [h > 0 for h in heights] == [False, True, False, False, False, True, False, False, False, True]
    assert "not plotted" not in svg_histogram([0.5], "x", 0.0, 1.0, left_out=("no face", 0))


def test_the_report_shows_the_target_beside_the_reference(tmp_path):
    ref, tgt, out = (np.full((32, 32, 3), v, np.uint8) for v in (40, 140, 240))
    for name, image in (("ref.png", ref), ("tgt.png", tgt), ("out.png", out)):
        save_png(tmp_path / name, image)
    scores = pl.DataFrame({"id": ["a", "b"], "k": [0, 0], "status": ["ok", "ok"], "error": [None, None],
                           "image": [str(tmp_path / "out.png")] * 2, "reference": [str(tmp_path / "ref.png")] * 2,
                           "target": [str(tmp_path / "tgt.png"), None], "condition": [None, None],
                           "prompt": ["p", "q"]})
    summary = {"metrics": {}, "status_counts": {"ok": 2}, "n_ok": 2, "n_requested": 2}
    page = render_report(scores, summary, {})
    sections = page.split("<section>")[1:]
    with_target = next(s for s in sections if "<h3>a</h3>" in s)
    without = next(s for s in sections if "<h3>b</h3>" in s)
    assert re.findall(r'<figure class="([^"]+)">', with_target) == ["ref", "target", "cond", "out ok"]
    figures = re.findall(r'<figure class="([^"]+)"><img src="([^"]+)"', with_target)
    assert dict(figures)["target"] == thumbnail_uri(load_rgb(tmp_path / "tgt.png"))
    assert 'class="target"' not in without


def test_missing_weights_are_one_short_line_of_fmus_own():
    from transformers import CLIPModel

    with pytest.raises(MetricUnavailable) as info:
        from_pretrained_local(CLIPModel, "openai/clip-vit-large-patch14", "CLIP", "--clip-model")
    message = str(info.value)
    assert message == ("CLIP weights not found locally: openai/clip-vit-large-patch14 is not in the Hugging Face "
                       "cache (nothing is downloaded); pass --clip-model DIR")


def test_demo_inputs_scoring_example_measures_facesim(tmp_path, fmu_home):
    from fmu.core.faces import get_backend
    from fmu.core.scoring import ScoreOptions, score_images
    from fmu.manifests.demo import SCORE_EXAMPLE, write_demo_inputs

    write_demo_inputs(tmp_path)
    example = tmp_path / SCORE_EXAMPLE
    result = score_images(example / "images", example / "manifest.csv", None,
                          ScoreOptions(face_backends=["dlib"], metrics=("facesim",), report=False))
    scores = pl.read_parquet(result.out_dir / "scores.parquet").sort("k")
    assert scores["status"].to_list() == ["ok", "ok"]
    # independently: dlib embeddings of the reference and each stand-in output, 1 - L2 distance
    backend = get_backend("dlib")
    ref = backend.analyse(load_rgb(tmp_path / "astronaut.png")).embedding
    expected = [1 - float(np.linalg.norm(backend.analyse(load_rgb(example / "images" / f"astronaut_{k}.png"))
                                         .embedding - ref)) for k in (0, 1)]
    assert scores["facesim_dlib"].to_list() == pytest.approx(expected, abs=1e-5)
    assert expected[0] > 0.4 > expected[1]      # the mirrored astronaut matches; another person does not
