"""`fmu shade` through Typer's CliRunner on fmu's app."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fmu.app import app as fmu_app
from fmu.core.images import load_rgb


@pytest.fixture(scope="module")
def app():
    return fmu_app  # the real app: its handler turns usage errors into exit 2


def test_shade_writes_the_condition_and_prints_pose(app, tmp_path, astronaut):
    src = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(src)
    out = tmp_path / "out" / "cond.png"
    result = CliRunner().invoke(app, ["shade", str(src), "--out", str(out), "--size", "128", "--renderer", "cpu"])
    assert result.exit_code == 0, result.output
    cond = load_rgb(out)
    assert cond.shape == (128, 128, 3) and (cond[..., 0] > 0).sum() > 200
    assert "yaw" in result.output and "sh[8]" in result.output


def test_target_option(app, tmp_path, astronaut):
    src, tgt = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(astronaut).save(src)
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(tgt)
    out = tmp_path / "cond.png"
    result = CliRunner().invoke(app, ["shade", str(src), "--out", str(out), "--target", str(tgt), "--size", "128"])
    assert result.exit_code == 0, result.output
    assert "target" in result.output


@pytest.mark.parametrize("kind", ["not_image", "no_face", "missing", "bad_renderer"])
def test_bad_input_is_one_line_and_exit_1_or_2(app, tmp_path, photos, kind):
    out = tmp_path / "cond.png"
    src = {"not_image": tmp_path / "x.jpg", "no_face": photos["chelsea.png"],
           "missing": tmp_path / "nope.jpg", "bad_renderer": tmp_path / "ok.png"}[kind]
    if kind == "not_image":
        src.write_text("hello")
    if kind == "bad_renderer":
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src)
    args = ["shade", str(src), "--out", str(out)] + (["--renderer", "opengl"] if kind == "bad_renderer" else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == (2 if kind == "bad_renderer" else 1), result.output  # usage error: 2
    assert not out.exists()
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output


def test_face_frame_is_cut_around_the_face(app, tmp_path, astronaut):
    """Default frame: the square around the face (the same box `fmu generate` uses); the
    centre frame of a wide photo whose face sits at one end finds no face."""
    from fmu.core.faces import get_backend
    from fmu.core.faces.crops import face_frame_box
    from fmu.core.shading import make_condition

    wide = np.full((512, 1280, 3), 90, np.uint8)
    wide[:, 768:] = astronaut
    src = tmp_path / "wide.png"
    Image.fromarray(wide).save(src)
    out = tmp_path / "cond.png"
    result = CliRunner().invoke(app, ["shade", str(src), "--out", str(out), "--size", "128", "--renderer", "cpu"])
    assert result.exit_code == 0, result.output
    box = face_frame_box(get_backend("dlib").analyse(wide).landmarks, wide.shape)
    assert f"frame: the {box[2]}x{box[2]} square at x={box[0]}, y={box[1]}" in " ".join(result.output.split())
    expected = make_condition(wide, size=128, renderer="cpu", box=box).condition
    np.testing.assert_array_equal(load_rgb(out)[..., 0], expected)
    centre = CliRunner().invoke(app, ["shade", str(src), "--out", str(tmp_path / "c.png"), "--frame", "centre"])
    assert centre.exit_code == 1 and "no_face" in centre.output


def test_out_naming_a_folder_is_a_usage_error(app, tmp_path, astronaut):
    src = tmp_path / "a.png"
    Image.fromarray(astronaut).save(src)
    (tmp_path / "cond").mkdir()
    result = CliRunner().invoke(app, ["shade", str(src), "--out", str(tmp_path / "cond")])
    assert result.exit_code == 2 and result.output.startswith("error: --out") and "Traceback" not in result.output
