"""The generation frame: the authors' face-centred square (default) or the photo's centre square."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from cli_run import generate as run
from PIL import Image

from fmu.core.errors import NoFaceError
from fmu.core.faces.crops import face_frame_box
from fmu.core.images import load_rgb, save_png


@pytest.mark.parametrize("landmarks, shape, scale, expected", [
    # extent 40 -> side 200 around the box centre (120, 110)
    ([[100, 100], [140, 120]], (800, 1000), 5.0, (20, 10, 200)),
    # at the top-left corner: slid back inside, still square
    ([[5, 5], [25, 15]], (800, 1000), 5.0, (0, 0, 100)),
    # at the bottom-right corner
    ([[270, 180], [290, 190]], (200, 300), 5.0, (200, 100, 100)),
    # larger than the image: shrunk to its shorter side, centred on the face as far as it can be
    ([[270, 180], [290, 190]], (200, 300), 50.0, (100, 0, 200)),
])
def test_face_frame_box(landmarks, shape, scale, expected):
    assert face_frame_box(np.array(landmarks, float), shape, scale) == expected


@pytest.fixture(scope="module")
def canvas(tmp_path_factory, astronaut):
    """The astronaut at the right end of a wide grey photo: its centre square holds no face."""
    folder = tmp_path_factory.mktemp("frame")
    wide = np.full((512, 1536, 3), 120, np.uint8)
    wide[:, 1024:] = astronaut
    path = folder / "wide.png"
    save_png(path, wide)
    save_png(folder / "astronaut.png", astronaut)
    return folder, path


@pytest.fixture(scope="module")
def dlib_backend():
    from fmu.core.faces import get_backend

    return get_backend("dlib")


def test_face_frame_follows_the_face_not_the_photo(canvas, dlib_backend, tmp_path):
    from fmu.core.runner.conditions import ConditionProvider

    folder, wide = canvas
    marks = dlib_backend.analyse(load_rgb(wide)).landmarks
    face = ConditionProvider(tmp_path / "a", renderer="cpu", frame_scale=5.0)
    on_canvas = face.get(wide, None, 256, 256, marks)
    assert on_canvas.frame == face_frame_box(marks, (512, 1536))
    left, top, side = on_canvas.frame
    assert left >= 1024 and side < 512  # inside the astronaut's part, around her face
    # the same pixels cut from the astronaut alone give the same condition
    from fmu.core.shading import make_condition

    alone = make_condition(load_rgb(folder / "astronaut.png"), size=512, renderer="cpu",
                           box=(left - 1024, top, side))
    small = np.asarray(Image.fromarray(alone.condition).resize((256, 256), Image.Resampling.BOX))
    np.testing.assert_array_equal(on_canvas.condition, small)
    np.testing.assert_allclose(on_canvas.pose, alone.pose, atol=1e-5)
    # the centre square of the wide photo holds no face at all
    with pytest.raises(NoFaceError):
        ConditionProvider(tmp_path / "b", renderer="cpu").get(wide, None, 256, 256)
    with pytest.raises(ValueError):
        face.get(wide, None, 256, 256)  # the face frame cannot be cut without landmarks


def test_generate_records_the_frame_and_resumes_only_under_the_same_one(canvas, photos, dlib_backend,
                                                                        tmp_path, fmu_home):
    _folder, wide = canvas
    tom = photos["tom_hanks.png"]
    manifest = tmp_path / "m.csv"
    pl.DataFrame({"id": ["wide", "moved"], "reference": [str(wide), str(wide)],
                  "prompt": ["a photo", "a photo"], "target": [None, str(tom)]}).write_csv(manifest)
    out = tmp_path / "out"
    fast = ["--steps", "2", "--batch-size", "2", "--save-conditions"]
    result = run([manifest, "--out", out, *fast])
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(out / "results.parquet").sort("id")
    assert df["frame"].to_list() == ["face:5", "face:5"]
    frames = {r["id"]: (r["frame_left"], r["frame_top"], r["frame_side"]) for r in df.iter_rows(named=True)}
    # the reference's frame for a row without target; the target's for a row with one
    assert frames["wide"] == face_frame_box(dlib_backend.analyse(load_rgb(wide)).landmarks, (512, 1536))
    tom_rgb = load_rgb(tom)
    assert frames["moved"] == face_frame_box(dlib_backend.analyse(tom_rgb).landmarks, tom_rgb.shape)
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["frame"] == "face" and info["config"]["frame_scale"] == 5.0

    again = run([manifest, "--out", out, *fast])
    assert "2 of them finished earlier and kept" in again.output
    # another frame is another image: nothing is kept, and the centre of the wide photo has no face
    centre = run([manifest, "--out", out, *fast, "--frame", "centre"])
    assert centre.exit_code == 1 and "finished earlier" not in centre.output
    df = pl.read_parquet(out / "results.parquet").sort("id")
    assert df["status"].to_list() == ["ok", "failed"]  # "moved" renders tom's (centred) face
    assert df["frame"].to_list() == ["centre", "centre"]
    assert df.filter(pl.col("id") == "wide")["error"][0].startswith("reference shading no_face")
    assert run([manifest, "--out", tmp_path / "x", "--frame", "side"]).exit_code == 2


def test_score_fits_the_source_in_the_recorded_frame(canvas, dlib_backend, tmp_path):
    """`fmu score` cuts the source where generation did (the recorded frame), so an output that
    is the face frame itself has zero pose error, as generate would have written."""
    from fmu.core.images import crop_square
    from fmu.core.runner.conditions import ConditionProvider
    from fmu.core.scoring import ScoreOptions, score_run

    _, wide = canvas
    image = load_rgb(wide)
    marks = dlib_backend.analyse(image).landmarks
    provider = ConditionProvider(tmp_path / "cache", frame_scale=5.0)
    cond = provider.get(wide, None, 512, 512, marks)
    out = crop_square(image, cond.frame, 512)
    run_dir = tmp_path / "run"
    save_png(run_dir / "images" / "w_0.png", out)
    left, top, side = cond.frame
    pl.DataFrame([dict(id="w", k=0, status="ok", error=None, prompt="p", reference=str(wide), target=None,
                       image="images/w_0.png", condition=None, frame_left=left, frame_top=top,
                       frame_side=side)]).write_parquet(run_dir / "results.parquet")
    (run_dir / "run.json").write_text(json.dumps({"face_backend": "dlib", "face_models": None}))
    scores = score_run(run_dir, ScoreOptions(metrics=("consistency",))).scores
    generated = provider.consistency(cond, out)
    assert scores["pose_error_deg"][0] == pytest.approx(generated["pose_error_deg"], abs=1e-6)
    assert scores["light_error"][0] == pytest.approx(generated["light_error"], abs=1e-6)
    assert scores["pose_error_deg"][0] == pytest.approx(0.0, abs=1e-6)
