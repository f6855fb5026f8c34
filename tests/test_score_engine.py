"""`fmu score` on the engines (`--engine processes`; Ray in test_ray_engine.py): the rows in units,
scored by worker processes, merged. The independent computation is the one-process score of the
same run: every row's status, reasons and metric values, and every summary entry, must agree. A
re-run after an interrupted engine run scores only the units that were missing; a unit no worker
finished fails its rows and no other."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
from score_inputs import assert_same_scores, make_score_run  # tests/score_inputs.py (pytest puts tests/ on sys.path)
from typer.testing import CliRunner

from fmu.app import app
from fmu.core.runner.distribute import inline_distributor, multiprocess_distributor
from fmu.core.scoring import Metric, ScoreOptions, register, score_run, unregister
from fmu.core.scoring.score_worker import UNITS_DIR
from fmu.core.scoring.units import plan_units

METRICS = ("facesim", "clip", "consistency", "fid")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, photos):
    return make_score_run(tmp_path_factory.mktemp("score_engine"), photos)


def count_outputs(rows, opts, progress) -> dict:
    """A set-scope toy: how many outputs the driver sees (the engine's workers never run it)."""
    return {"outputs_seen": {"value": len(rows.with_output()), "n": rows.n}}


@pytest.fixture()
def set_metric():
    register(Metric(name="outputs_seen", help="a test's set metric", compute=count_outputs, keys=("outputs_seen",),
                    scope="set", lines=lambda key, m: [(key, str(m["value"]), str(m["n"]), "")]))
    yield
    unregister("outputs_seen")


def options(tiny_clip, **kw) -> ScoreOptions:
    return ScoreOptions(face_backends=["dlib"], clip_model=str(tiny_clip), metrics=(*METRICS, "outputs_seen"),
                        report=False, workers=1, **kw)


@pytest.fixture(scope="module")
def inline(run_dir, tiny_clip, tmp_path_factory):
    """The one-process score of the run (a copy: the tables land beside results.parquet)."""
    register(Metric(name="outputs_seen", help="x", compute=count_outputs, keys=("outputs_seen",), scope="set"))
    try:
        here = tmp_path_factory.mktemp("inline") / "run"
        shutil.copytree(run_dir, here)
        return score_run(here, options(tiny_clip), backend_from_run=False)
    finally:
        unregister("outputs_seen")


def copy_run(run_dir, tmp_path):
    here = tmp_path / "run"
    shutil.copytree(run_dir, here)
    return here


def test_the_inline_score_is_a_real_reference(inline):
    """The comparison below means something: rows of each kind, metrics with values."""
    status = dict(zip(inline.scores["id"], inline.scores["status"]))
    assert status["cat"] == "no_face" and status["bad"] == "failed" and status["gone"] == "failed"
    assert sum(s == "ok" for s in status.values()) == 10
    metrics = inline.summary["metrics"]
    assert metrics["facesim_dlib"]["n"] == 11 and metrics["facesim_dlib"]["mean_detected"] > 0.7
    assert metrics["clip_t"]["n"] == 12 and metrics["pose_light"]["n"] >= 5
    assert metrics["fid"]["available"] is False  # no Inception weights here: said, not crashed
    assert metrics["outputs_seen"] == {"available": True, "value": 12, "n": 13}


def test_processes_engine_scores_like_one_process(run_dir, inline, tiny_clip, tmp_path, set_metric):
    here = copy_run(run_dir, tmp_path)
    result = score_run(here, options(tiny_clip, device="cpu,cpu", engine="processes"), backend_from_run=False,
                       engine=multiprocess_distributor)
    assert_same_scores(result, inline)
    timings = result.summary["timings"]
    assert timings["engine"] == "processes" and timings["engine_workers"] == 2
    assert timings["units"] == len(plan_units(inline_rows(here), 2)) > 2
    assert not (here / UNITS_DIR).exists()  # merged, then removed
    assert pl.read_parquet(here / "scores.parquet").height == 13


def inline_rows(run):
    from fmu.core.scoring.inputs import rows_from_run

    return rows_from_run(run)


def test_rerun_after_an_interrupted_engine_run_scores_only_the_missing_units(run_dir, inline, tiny_clip, tmp_path,
                                                                              set_metric):
    here = copy_run(run_dir, tmp_path)
    opts = options(tiny_clip, device="cpu", engine="processes")
    n_units = len(plan_units(inline_rows(here), 1))

    def stopped(units, make_worker, devices, on_done):
        """Two units finish, then the run is interrupted (as Ctrl-C would)."""
        inline_distributor(units[:2], make_worker, devices, on_done)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score_run(here, opts, backend_from_run=False, engine=stopped)
    assert len(list((here / UNITS_DIR).glob("unit-*.json"))) == 2
    asked: list[int] = []

    def counting(units, make_worker, devices, on_done):
        asked.append(len(units))
        return inline_distributor(units, make_worker, devices, on_done)

    result = score_run(here, opts, backend_from_run=False, engine=counting)
    assert asked == [n_units - 2]
    assert result.summary["timings"]["units_resumed"] == 2
    assert_same_scores(result, inline)


def test_a_unit_no_worker_finished_fails_only_its_rows(run_dir, inline, tiny_clip, tmp_path, set_metric):
    here = copy_run(run_dir, tmp_path)
    units = plan_units(inline_rows(here), 1)
    lost_rows = {inline_rows(here)["id"][i] for i in units[1][0]}

    def one_lost(units, make_worker, devices, on_done):
        worker = make_worker(devices[0])
        worker.run(((u, units[u]) for u in range(len(units)) if u != 1), on_done=lambda uid, r: on_done(uid, None))
        on_done(1, "worker_died: a worker died 2 times on this unit")
        return {"workers": 1}

    result = score_run(here, options(tiny_clip, engine="processes"), backend_from_run=False, engine=one_lost)
    scores = result.scores
    for row in scores.iter_rows(named=True):
        if row["id"] in lost_rows:
            assert row["status"] == "failed" and row["error"] == "worker_died: a worker died 2 times on this unit"
            assert row["facesim_dlib"] is None
    kept = scores.filter(~pl.col("id").is_in(list(lost_rows)))
    want = inline.scores.filter(~pl.col("id").is_in(list(lost_rows))).sort("id")
    assert kept.sort("id")["status"].to_list() == want["status"].to_list()
    np.testing.assert_allclose(kept.sort("id")["clip_t"].fill_null(-1).to_numpy(),
                               want["clip_t"].fill_null(-1).to_numpy(), atol=1e-5)
    assert not result.all_ok


def test_units_keep_a_references_rows_together(run_dir):
    rows = inline_rows(run_dir)
    units = plan_units(rows, 2)
    assert sorted(i for idx, _ in units for i in idx) == list(range(rows.height))
    assert max(len(idx) for idx, _ in units) <= -(-rows.height // 8)
    for idx, df in units:
        assert df["id"].to_list() == [rows["id"][i] for i in idx]
        refs = [rows["reference_path"][i] for i in idx]
        assert refs == sorted(refs)  # ordered by reference: a reference's rows are contiguous


def test_cli_engine_choices(run_dir, tmp_path):
    here = copy_run(run_dir, tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["score", str(here), "--engine", "torchrun"])
    assert res.exit_code == 2 and "fmu score runs on this machine's processes" in res.output
    res = runner.invoke(app, ["score", str(here), "--devices", "cpu,cpu"])
    assert res.exit_code == 2 and "runs on one device" in res.output
    assert not (here / "scores.parquet").exists()


def test_cli_scores_on_the_processes_engine(run_dir, inline, tmp_path):
    """`fmu score RUN --engine processes --devices cpu,cpu`: the command's own wiring (engine picked by
    name, devices parsed as a list), FaceSim like the one-process score, exit 1 for the failed rows."""
    here = copy_run(run_dir, tmp_path)
    res = CliRunner().invoke(app, ["score", str(here), "--engine", "processes", "--devices", "cpu,cpu",
                                   "--metrics", "facesim", "--face-backend", "dlib", "--no-report", "--workers", "1"])
    assert res.exit_code == 1, res.output
    got = pl.read_parquet(here / "scores.parquet").sort("id")
    want = inline.scores.sort("id")
    assert got["status"].to_list() == want["status"].to_list()
    np.testing.assert_allclose(got["facesim_dlib"].fill_null(-9).to_numpy(),
                               want["facesim_dlib"].fill_null(-9).to_numpy(), atol=1e-6)
    summary = json.loads((here / "summary.json").read_text())
    assert summary["timings"]["engine"] == "processes" and summary["timings"]["engine_workers"] == 2
