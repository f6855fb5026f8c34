"""Pose-RMSE / Light-RMSE columns: the shading channel's fits, compared output vs source."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from PIL import Image

from fmu.core.images import save_png
from fmu.core.scoring import ScoreOptions, score_run


def test_pose_and_light_errors_equal_direct_shading_fits(tmp_path, astronaut):
    from fmu.core.shading import fit_sh, light_error, pose_error_deg, reconstruct

    rotated = np.asarray(Image.fromarray(astronaut).rotate(12, resample=Image.Resampling.BICUBIC))
    darker_left = astronaut.astype(np.float32)
    darker_left[:, :256] *= 0.45                                    # light from the right
    darker_left = darker_left.astype(np.uint8)
    run = tmp_path / "run"
    save_png(tmp_path / "ref.png", astronaut)
    outs = [astronaut, rotated, darker_left, np.full((512, 512, 3), 128, np.uint8)]
    for k, img in enumerate(outs):
        save_png(run / "images" / f"a_{k}.png", img)
    pl.DataFrame([dict(id="a", k=k, status="ok", error=None, seed=k, prompt="p", reference=str(tmp_path / "ref.png"),
                       target=None, image=f"images/a_{k}.png", condition=None) for k in range(4)]
                 ).write_parquet(run / "results.parquet")
    (run / "run.json").write_text(json.dumps({"face_backend": "dlib", "face_models": None}))
    result = score_run(run, ScoreOptions(metrics=("consistency",)))
    pose, light = result.scores["pose_error_deg"].to_list(), result.scores["light_error"].to_list()

    ref_mesh = reconstruct(astronaut)
    ref_sh = fit_sh(astronaut, ref_mesh)
    for k in range(3):
        mesh = reconstruct(outs[k])
        assert pose[k] == pytest.approx(pose_error_deg(ref_mesh.pose, mesh.pose), abs=1e-4)
        assert light[k] == pytest.approx(light_error(ref_sh, fit_sh(outs[k], mesh)), abs=1e-5)
    assert pose[0] == pytest.approx(0.0, abs=1e-6) and light[0] == pytest.approx(0.0, abs=1e-6)
    assert pose[1] > 3.0                    # a 12 degree roll shows up as pose error
    assert light[2] > light[1]              # relighting changes the light more than rotating
    assert pose[3] is None and "pose/light output" in result.scores["error"][3]
    m = result.summary["metrics"]["pose_light"]
    assert m["n"] == 3 and m["n_no_fit"] == 1
    assert m["pose_rmse_deg"] == pytest.approx(np.sqrt(np.mean(np.square(pose[:3]))))
    assert m["light_rmse"] == pytest.approx(np.sqrt(np.mean(np.square(light[:3]))))


def test_score_fits_the_source_in_the_generation_frame(tmp_path, photos):
    """A wide group photo as reference: generation reconstructs it in its centre square, and so
    must `fmu score` — then both give the same pose/light numbers for the same output."""
    from fmu.core.images import load_rgb, to_square
    from fmu.core.runner.conditions import ConditionProvider

    group = load_rgb(photos["t1.jpg"])
    assert group.shape[1] > group.shape[0] * 1.3  # wide: the square frame differs from the photo
    ref = tmp_path / "group.jpg"
    ref.write_bytes(photos["t1.jpg"].read_bytes())
    run = tmp_path / "run"
    outs = [to_square(group, 512), np.asarray(Image.fromarray(to_square(group, 512)).rotate(
        10, resample=Image.Resampling.BICUBIC))]
    for k, img in enumerate(outs):
        save_png(run / "images" / f"g_{k}.png", img)
    pl.DataFrame([dict(id="g", k=k, status="ok", error=None, seed=k, prompt="p", reference=str(ref),
                       target=None, image=f"images/g_{k}.png", condition=None) for k in range(2)]
                 ).write_parquet(run / "results.parquet")
    (run / "run.json").write_text(json.dumps({"face_backend": "dlib", "face_models": None}))
    scores = score_run(run, ScoreOptions(metrics=("consistency",))).scores

    provider = ConditionProvider(tmp_path / "cache")
    cond = provider.get(ref, None, 512, 512)
    for k, out in enumerate(outs):
        generated = provider.consistency(cond, out)  # what `fmu generate` writes for this row
        assert scores["pose_error_deg"][k] == pytest.approx(generated["pose_error_deg"], abs=1e-6)
        assert scores["light_error"][k] == pytest.approx(generated["light_error"], abs=1e-6)
    assert scores["pose_error_deg"][0] == pytest.approx(0.0, abs=1e-6)
    assert scores["pose_error_deg"][1] > 3.0
