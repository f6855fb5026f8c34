"""The metrics registry: a metric is one declaration. A toy metric registered here, through the public
API only, is run by `fmu score` and appears in scores.parquet, summary.json, the terminal table,
report.html and the CLI help, without any other edit."""

from __future__ import annotations

import json

import click
import numpy as np
import polars as pl
import pytest
import typer

from fmu.core.images import save_png
from fmu.core.scoring import (
    Column,
    Metric,
    MetricUnavailable,
    ScoreOptions,
    metric_names,
    register,
    registered,
    score_run,
    unregister,
)
from fmu.core.scoring.registry import owner
from fmu.core.scoring.summary_table import metric_lines


def score_brightness(rows, opts, progress) -> dict:
    """The toy: each output's mean brightness in [0, 1]."""
    values = rows.column("brightness")
    for i in rows.with_output():
        values[i] = float(rows.out[i].mean() / 255.0)
    scored = [v for v in values if v is not None]
    return {"brightness": {"mean": sum(scored) / len(scored), "n": len(scored), "scale": "mean pixel / 255"}}


TOY = Metric(name="brightness", help="mean brightness of the output (a test's toy)", compute=score_brightness,
             keys=("brightness",), columns=(Column("brightness", label="Brightness", digits=3),))


@pytest.fixture()
def toy():
    register(TOY)
    yield TOY
    unregister(TOY.name)


@pytest.fixture()
def run_dir(tmp_path):
    run = tmp_path / "run"
    save_png(tmp_path / "ref.png", np.full((64, 64, 3), 10, np.uint8))
    save_png(run / "images" / "a_0.png", np.full((64, 64, 3), 51, np.uint8))     # 0.2
    save_png(run / "images" / "a_1.png", np.full((64, 64, 3), 153, np.uint8))    # 0.6
    rows = [dict(id="a", k=k, status="ok", error=None, seed=k, prompt="p", reference=str(tmp_path / "ref.png"),
                 target=None, image=f"images/a_{k}.png", condition=None) for k in (0, 1)]
    pl.DataFrame(rows).write_parquet(run / "results.parquet")
    (run / "run.json").write_text(json.dumps({"face_backend": "dlib"}))
    return run


def test_the_builtin_metrics_are_registered_in_order():
    assert metric_names() == ("facesim", "clip", "dino", "lpips", "fid", "consistency")
    assert owner("clip_i").name == "clip" and owner("pose_light").name == "consistency"
    assert owner("facesim_arcface").name == owner("facesim_dlib").name == "facesim"
    with pytest.raises(ValueError, match="already registered"):
        register(registered()[0])


def test_a_registered_metric_reaches_every_output(toy, run_dir):
    assert metric_names()[-1] == "brightness" and ScoreOptions().metrics[-1] == "brightness"
    result = score_run(run_dir, ScoreOptions(metrics=("brightness",)))
    scores = pl.read_parquet(run_dir / "scores.parquet")
    assert scores["brightness"].to_list() == pytest.approx([0.2, 0.6])
    assert scores.schema["brightness"] == pl.Float64
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metrics"] == {"brightness": {"available": True, "mean": pytest.approx(0.4), "n": 2,
                                                 "scale": "mean pixel / 255"}}
    assert summary["timings"]["brightness_s"] >= 0 and result.all_ok
    assert metric_lines(summary) == [("brightness", "0.4000", "2", "mean pixel / 255")]
    report = (run_dir / "report.html").read_text()
    assert "<td>brightness</td><td>0.4000</td><td>2</td><td>mean pixel / 255</td>" in report
    assert "Brightness 0.200" in report and "Brightness 0.600" in report


def test_an_unavailable_registered_metric_is_reported_with_its_reason(run_dir):
    def missing(rows, opts, progress):
        raise MetricUnavailable("no toy weights here")

    register(Metric(name="brightness", help="toy", compute=missing, keys=("brightness",)))
    try:
        result = score_run(run_dir, ScoreOptions(metrics=("brightness",), report=False))
    finally:
        unregister("brightness")
    assert result.summary["metrics"] == {"brightness": {"available": False, "reason": "no toy weights here"}}
    assert "brightness" not in result.scores.columns and "brightness" not in metric_names()


def test_the_cli_lists_a_registered_metric(toy):
    from fmu.app import app
    from fmu.score_cmd import METRIC_LIST

    command = typer.main.get_command(app).commands["score"]
    command.get_help(click.Context(command, info_name="score"))
    (metrics,) = [p for p in command.params if p.name == "metrics"]
    assert "consistency, brightness, or all." in metrics.help
    assert metrics.help.endswith("; brightness: mean brightness of the output (a test's toy)")
    assert METRIC_LIST("facesim,brightness") == ("facesim", "brightness")  # --metrics accepts it
