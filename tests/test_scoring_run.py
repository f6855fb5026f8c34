"""`fmu score` end to end on a run folder with bad rows, and the images+manifest form, and the CLI."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from fmu.core.images import save_png
from fmu.core.scoring import ScoreOptions, metric, register, score_images, score_run


def _row(k, image, reference, status="ok", error=None, rid="astro"):
    return dict(id=rid, k=k, status=status, error=error, seed=k, prompt="a photo of an astronaut",
                reference=str(reference), target=None, image=image, condition=None)


@pytest.fixture()
def run_dir(tmp_path, astronaut):
    run = tmp_path / "run"
    (run / "images").mkdir(parents=True)
    ref = tmp_path / "refs" / "astronaut.png"
    save_png(ref, astronaut)
    save_png(run / "images" / "astro_0.png", astronaut[:, ::-1])                            # same face
    save_png(run / "images" / "astro_1.png",
             np.asarray(Image.fromarray(astronaut).rotate(8, resample=Image.Resampling.BICUBIC)))
    save_png(run / "images" / "astro_2.png", np.full((512, 512, 3), 120, np.uint8))        # no face
    (run / "images" / "astro_3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")            # corrupt
    save_png(run / "images" / "lost_0.png", astronaut)
    rows = [_row(0, "images/astro_0.png", ref), _row(1, "images/astro_1.png", ref),
            _row(2, "images/astro_2.png", ref), _row(3, "images/astro_3.png", ref),
            _row(0, "images/lost_0.png", tmp_path / "refs" / "gone.png", rid="lost"),      # missing reference
            _row(4, None, ref, status="failed", error="generation: out of memory")]
    pl.DataFrame(rows).write_parquet(run / "results.parquet")
    (run / "run.json").write_text(json.dumps({"face_backend": "dlib", "face_models": None}))
    return run


def _direct(image):
    import dlib
    import face_recognition_models as frm

    rects, scores, _ = dlib.get_frontal_face_detector().run(np.ascontiguousarray(image), 0, 0.0)
    shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())(
        np.ascontiguousarray(image), rects[int(np.argmax(scores))])
    return np.asarray(dlib.face_recognition_model_v1(frm.face_recognition_model_location())
                      .compute_face_descriptor(np.ascontiguousarray(image), shape))


def test_bad_rows_are_reported_and_the_rest_scored(run_dir, astronaut):
    result = score_run(run_dir, ScoreOptions(metrics=("facesim", "clip", "lpips")))
    s = pl.read_parquet(run_dir / "scores.parquet")
    assert s.height == 6 and s.equals(result.scores)
    by = {(r["id"], r["k"]): r for r in s.to_dicts()}
    assert by[("astro", 0)]["status"] == "ok" and by[("astro", 1)]["status"] == "ok"
    ref = _direct(astronaut)
    rotated = Image.fromarray(astronaut).rotate(8, resample=Image.Resampling.BICUBIC)
    for k, img in ((0, astronaut[:, ::-1]), (1, rotated)):
        expected = 1.0 - np.linalg.norm(ref - _direct(np.asarray(img)))
        assert by[("astro", k)]["facesim_dlib"] == pytest.approx(expected, abs=1e-5)
        assert by[("astro", k)]["facesim_dlib_match"] is True
    assert by[("astro", 2)]["status"] == "no_face" and by[("astro", 2)]["facesim_dlib"] is None
    assert "no_face" in by[("astro", 2)]["error"] and by[("astro", 2)]["faces_dlib"] == 0
    assert by[("astro", 3)]["status"] == "failed" and "corrupt_image" in by[("astro", 3)]["error"]
    assert by[("lost", 0)]["status"] == "failed" and "reference: missing_file" in by[("lost", 0)]["error"]
    assert by[("astro", 4)]["status"] == "failed" and "out of memory" in by[("astro", 4)]["error"]

    summary = json.loads((run_dir / "summary.json").read_text())
    fs = summary["metrics"]["facesim_dlib"]
    values = [by[("astro", 0)]["facesim_dlib"], by[("astro", 1)]["facesim_dlib"]]
    assert (fs["n"], fs["n_detected"], fs["n_no_face"]) == (3, 2, 1)
    assert fs["mean_detected"] == pytest.approx(sum(values) / 2)
    assert fs["mean_strict"] == pytest.approx(sum(values) / 3)
    assert summary["status_counts"] == {"ok": 2, "no_face": 1, "failed": 3}
    assert summary["n_requested"] == 6 and not result.all_ok
    # weights that are not on this machine: reported with a reason, not a crash
    assert summary["metrics"]["clip_t"]["available"] is False
    assert "not found locally" in summary["metrics"]["clip_t"]["reason"]
    lpips = summary["metrics"]["lpips"]
    assert lpips["available"] is False and "--lpips-weights" in lpips["reason"]
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/jpeg;base64,") >= 5 and "<svg" in html


def test_images_and_manifest_form(tmp_path, astronaut):
    refs = tmp_path / "data"
    save_png(refs / "faces" / "a.png", astronaut)
    pl.DataFrame({"id": ["a", "b"], "reference": ["faces/a.png", "faces/a.png"],
                  "prompt": ["astronaut", "nobody"]}).write_csv(refs / "manifest.csv")
    out = tmp_path / "outs"
    save_png(out / "a_0.png", astronaut[:, ::-1])
    save_png(out / "a_1.png", astronaut)
    save_png(out / "zzz.png", astronaut)                 # no manifest row
    result = score_images(out, refs / "manifest.csv", tmp_path / "scored", ScoreOptions(metrics=("facesim",)))
    by = {(r["id"], r["k"]): r for r in result.scores.to_dicts()}
    assert by[("a", 0)]["status"] == "ok" and by[("a", 1)]["facesim_dlib"] == pytest.approx(1.0, abs=1e-6)
    assert by[("zzz", 0)]["status"] == "failed" and "no manifest row" in by[("zzz", 0)]["error"]
    assert by[("b", 0)]["status"] == "failed" and "no image named b.png" in by[("b", 0)]["error"]
    assert (tmp_path / "scored" / "scores.parquet").is_file()


def _cli():
    from fmu.app import app  # the real app: its handler turns usage errors into exit 2

    return app


def test_cli_exit_codes(run_dir, tmp_path, astronaut):
    runner = CliRunner()
    app = _cli()
    res = runner.invoke(app, ["score", str(run_dir), "--metrics", "facesim", "--no-report"])
    assert res.exit_code == 1, res.output
    assert "facesim_dlib" in res.output and "no_face" in res.output
    assert not (run_dir / "report.html").exists()
    # a clean folder scores 0
    good = tmp_path / "good"
    save_png(good / "images" / "x_0.png", astronaut)
    save_png(good / "ref.png", astronaut)
    pl.DataFrame([_row(0, "images/x_0.png", good / "ref.png", rid="x")]).write_parquet(good / "results.parquet")
    res = runner.invoke(app, ["score", str(good), "--metrics", "facesim", "--face-backend", "dlib"])
    assert res.exit_code == 0, res.output
    assert (good / "report.html").is_file()
    # usage errors
    assert runner.invoke(app, ["score"]).exit_code == 2
    assert runner.invoke(app, ["score", str(good), "--metrics", "nope"]).exit_code == 2
    assert runner.invoke(app, ["score", "--images", str(good)]).exit_code == 2
    assert runner.invoke(app, ["score", str(tmp_path / "no_such_run")]).exit_code == 2
    assert runner.invoke(app, ["score", str(good), "--face-backend", "vgg"]).exit_code == 2


def test_interrupted_score_resumes_only_for_the_same_inputs(run_dir):
    """A score stopped after FaceSim keeps that metric's rows; the re-run computes only the rest,
    unless an image it read has changed since, which starts afresh."""
    opts = lambda: ScoreOptions(metrics=("facesim", "consistency"), report=False)  # noqa: E731
    calls: list[str] = []
    facesim, consistency = metric("facesim"), metric("consistency")

    def counting_facesim(*args, **kwargs):
        calls.append("facesim")
        return facesim.compute(*args, **kwargs)

    def interrupted(*args):
        raise KeyboardInterrupt  # what Ctrl-C in the middle of Pose/Light looks like

    def use(facesim_fn, consistency_fn):  # the registry's public API: a metric replaced by name
        register(replace(facesim, compute=facesim_fn), replace=True)
        register(replace(consistency, compute=consistency_fn), replace=True)

    try:
        use(counting_facesim, interrupted)
        with pytest.raises(KeyboardInterrupt):
            score_run(run_dir, opts())
        state = json.loads((run_dir / ".score_state.json").read_text())
        assert state["done"] == ["facesim_dlib"] and calls == ["facesim"]
        use(counting_facesim, consistency.compute)

        resumed = score_run(run_dir, opts())
        assert calls == ["facesim"] and resumed.summary["resumed_metrics"] == ["facesim_dlib"]
        assert not (run_dir / ".score_state.json").exists()
        fresh = score_run(run_dir, opts())  # nothing saved any more: everything computed
        assert calls == ["facesim", "facesim"] and fresh.summary["resumed_metrics"] == []
        assert resumed.scores.equals(fresh.scores, null_equal=True)
        assert resumed.summary["metrics"] == fresh.summary["metrics"]

        # a stale state: an output changed after it was saved
        use(counting_facesim, interrupted)
        with pytest.raises(KeyboardInterrupt):
            score_run(run_dir, opts())
        use(counting_facesim, consistency.compute)
        image = run_dir / "images" / "astro_0.png"
        st = image.stat()
        os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        again = score_run(run_dir, opts())
        assert calls == ["facesim"] * 4 and again.summary["resumed_metrics"] == []
    finally:
        register(facesim, replace=True)
        register(consistency, replace=True)


def test_images_form_reads_manifests_as_generate_does(tmp_path, astronaut):
    """A ';'-separated manifest without ids, as `fmu generate` accepts it: its images are named
    row<N>_<k>.png by generate, and score pairs them by those names."""
    refs = tmp_path / "data"
    save_png(refs / "a.png", astronaut)
    (refs / "m.csv").write_text("reference;prompt\na.png;astronaut\na.png;again\n")
    out = tmp_path / "outs"
    save_png(out / "row000000_0.png", astronaut)
    result = score_images(out, refs / "m.csv", tmp_path / "scored", ScoreOptions(metrics=("facesim",)))
    by = {(r["id"], r["k"]): r for r in result.scores.to_dicts()}
    assert by[("row000000", 0)]["facesim_dlib"] == pytest.approx(1.0, abs=1e-6)
    assert by[("row000001", 0)]["status"] == "failed"  # no image for the second row


def test_damaged_tables_are_one_line_usage_errors(tmp_path, astronaut):
    runner = CliRunner()
    app = _cli()
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.parquet").write_text("not parquet")
    res = runner.invoke(app, ["score", str(run)])
    assert res.exit_code == 2 and "results.parquet is not a readable Parquet table" in res.output
    save_png(tmp_path / "imgs" / "x.png", astronaut)
    res = runner.invoke(app, ["score", "--images", str(tmp_path / "imgs"), "--manifest", str(run / "results.parquet")])
    assert res.exit_code == 2 and "cannot read manifest" in res.output
