"""run.json keeps every invocation that wrote into a folder (a resumed generate, a resumed training):
the first run's command, start, wall time and images stay when a later one writes."""

from __future__ import annotations

import json
import time

from typer.testing import CliRunner

from fmu.app import app
from fmu.core.run_record import write_run_record


def test_each_invocation_is_kept_and_one_invocation_updates_its_own_entry(tmp_path):
    t0 = time.time() - 100
    write_run_record(tmp_path, "train", config={}, summary={"status": "running"}, timings={}, started=t0)
    write_run_record(tmp_path, "train", config={}, summary={"status": "interrupted"}, timings={"wall_seconds": 40.0},
                     started=t0, made=12)
    t1 = time.time() - 30
    info = write_run_record(tmp_path, "train", config={}, summary={"status": "finished"}, timings={}, started=t1,
                            made=8)
    assert [(h["status"], h["made"]) for h in info["history"]] == [("interrupted", 12), ("finished", 8)]
    first, second = info["history"]
    assert first["start_time"] == t0 and second["start_time"] == t1
    assert abs(first["wall_seconds"] - (time.time() - t0)) < 5     # the first write's end, not the second's
    assert info["totals"]["invocations"] == 2 and info["totals"]["made"] == 20
    assert json.loads((tmp_path / "run.json").read_text())["history"] == info["history"]


def test_a_run_json_from_before_history_becomes_its_first_entry(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"command": "generate", "argv": ["fmu", "generate", "m.csv"],
                                                   "finished_at": "2026-11-01T10:00:00+0000",
                                                   "timings": {"wall_seconds": 321.5}}))
    info = write_run_record(tmp_path, "generate", config={}, summary={}, timings={"wall_seconds": 2.0}, made=0)
    assert [h["wall_seconds"] for h in info["history"]] == [321.5, 2.0]
    assert info["history"][0]["argv"] == ["fmu", "generate", "m.csv"]


def test_resumed_generate_keeps_the_first_runs_record(tmp_path, photos, fmu_home):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id,reference,prompt,num_images\nh,{photos['tom_hanks.png']},a portrait,2\n")
    out = tmp_path / "run"
    args = ["generate", str(manifest), "--out", str(out), "--steps", "2"]
    assert CliRunner().invoke(app, args).exit_code == 0
    first = json.loads((out / "run.json").read_text())
    manifest.write_text(f"id,reference,prompt,num_images\nh,{photos['tom_hanks.png']},a portrait,3\n")
    assert CliRunner().invoke(app, args).exit_code == 0   # resumes: one more image
    info = json.loads((out / "run.json").read_text())
    assert [h["made"] for h in info["history"]] == [2, 1]
    assert info["history"][0] == first["history"][0]
    # the first run's wall time (start to record) is kept; its timings measure start to summary
    assert abs(info["history"][0]["wall_seconds"] - first["timings"]["wall_seconds"]) < 0.5
    assert info["summary"]["ok"] == 3 and info["summary"]["skipped"] == 2
