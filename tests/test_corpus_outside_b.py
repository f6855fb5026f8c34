"""Corpus of issue 23, second part: a resume on other data, an expand/shade that would overwrite its
input or sweep without end, progress lines in a log file, and a re-run with nothing to do that
answers before any model loads. Each case fails with one line naming what was wrong."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from cli_run import invoke as cli
from test_train_loop import _cfg, prepared  # noqa: F401  (the module's prepared-data fixture)

from fmu.core.errors import UsageError


def test_resume_on_re_prepared_data_is_refused_with_the_difference(prepared, tmp_path):  # noqa: F811
    from fmu.training.trainer import run_training

    data = tmp_path / "data"
    shutil.copytree(prepared.manifest.parent, data)
    manifest = data / prepared.manifest.name
    out = tmp_path / "out"
    run_training(_cfg(manifest, out, max_steps=2, checkpoint_every=2, validate_every=0, lambda_id=0))
    rows = pl.read_parquet(manifest)
    rows.head(rows.height - 1).write_parquet(manifest)   # prepared again, one row fewer
    with pytest.raises(UsageError, match="trained on other data") as caught:
        run_training(_cfg(manifest, out, max_steps=4, resume="latest", validate_every=0, lambda_id=0))
    assert f"{rows.height} prepared rows" in str(caught.value)
    assert f"now holds {rows.height - 1}" in str(caught.value)
    rows.write_parquet(manifest)   # the same rows again: the resume goes on
    summary = run_training(_cfg(manifest, out, max_steps=3, resume="latest", validate_every=0, lambda_id=0))
    assert [h["step"] for h in summary.losses] == [3]


@pytest.fixture
def faces(tmp_path, photos):
    shutil.copy(photos["astronaut.png"], tmp_path / "astronaut.png")
    pl.DataFrame({"id": ["astro"], "reference": ["astronaut.png"], "prompt": ["a"]}).write_csv(tmp_path / "faces.csv")
    return tmp_path


@pytest.mark.parametrize("sweep, words", [
    ("-90:90:0.0001", "gives 1,800,001 values (over 1,000,000)"),   # counted before a value is made
    ("0:inf:1", "finite numbers"), ("nan:1:1", "finite numbers"), ("0:1:1e-320", "finite numbers")])
def test_expand_counts_a_sweep_before_building_it(faces, sweep, words):
    res = cli("expand", faces / "faces.csv", "--yaw", sweep, "--out", faces / "grid.csv")
    assert res.exit_code == 2 and words in " ".join(res.output.split()), res.output
    assert not (faces / "grid.csv").exists()


def test_expand_and_shade_never_write_over_an_input(faces):
    before = {p.name: p.read_bytes() for p in faces.iterdir()}
    res = cli("expand", faces / "faces.csv", "--yaw", "0", "--out", faces / "faces.csv")
    assert res.exit_code == 2 and "is the input" in " ".join(res.output.split()), res.output
    res = cli("expand", faces / "faces.csv", "--yaw", "0", "--out", faces / "." / "faces.csv")   # another spelling
    assert res.exit_code == 2 and "is the input" in " ".join(res.output.split()), res.output
    res = cli("shade", faces / "astronaut.png", "--out", faces / "astronaut.png")
    assert res.exit_code == 2 and "is the input" in " ".join(res.output.split()), res.output
    assert {p.name: p.read_bytes() for p in faces.iterdir()} == before


@pytest.mark.parametrize("command", [["expand", "faces.csv", "--yaw", "0", "--out", ""],
                                     ["shade", "astronaut.png", "-o", ""], ["generate", "faces.csv", "--out="]])
def test_an_empty_out_is_a_usage_error(faces, monkeypatch, command):
    monkeypatch.chdir(faces)
    before = sorted(p.name for p in faces.iterdir())
    res = cli(*command)
    assert res.exit_code == 2 and "--out is empty" in res.output, res.output
    assert sorted(p.name for p in faces.iterdir()) == before


def _logged(args: list[str], log: Path) -> subprocess.CompletedProcess:
    """`fmu ARGS > log` as nohup or SLURM runs it: stdout a file, not a terminal."""
    with open(log, "w") as fh:
        return subprocess.run([sys.executable, "-m", "fmu.app", *args], stdout=fh, stderr=subprocess.PIPE,
                              text=True, timeout=900, env={**os.environ, "COLUMNS": "80"})


LINE = re.compile(r"^(?P<what>\w+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+), (?:[\d.]+|-) (?P=unit)/s, "
                  r"ETA (?:\d+:\d\d:\d\d|-), elapsed \d+:\d\d:\d\d(?:, (?P<detail>.*))?$")


def test_generate_into_a_log_file_prints_plain_progress_lines(faces, tiny_preset):
    pl.DataFrame({"id": ["a", "b", "gone"], "reference": ["astronaut.png", "astronaut.png", "missing.png"],
                  "prompt": ["a", "b", "c"]}).write_csv(faces / "m.csv")
    log = faces / "run.log"
    res = _logged(["generate", str(faces / "m.csv"), "--out", str(faces / "run"), "--steps", "2", "--no-shading",
                   "--progress-interval", "0.01"], log)
    assert res.returncode == 1, res.stderr   # the missing reference fails its row
    text = log.read_text()
    assert "\x1b" not in text and "\r" not in text   # no bar redraws, no colour codes
    lines = [m for m in map(LINE.match, text.splitlines()) if m]
    assert lines and {m["what"] for m in lines} == {"generating"} and {m["unit"] for m in lines} == {"images"}
    assert [int(m["total"]) for m in lines] == [2] * len(lines)   # the two valid rows
    done = [int(m["done"]) for m in lines]
    assert done == sorted(done) and done[-1] == 2
    assert lines[-1]["detail"] == "1 failed"


def test_training_into_a_log_file_prints_step_and_loss_terms(prepared, tmp_path):  # noqa: F811
    log = tmp_path / "train.log"
    res = _logged(["train", "--data", str(prepared.manifest), "--out", str(tmp_path / "t"), "--max-steps", "3",
                   "--batch-size", "2", "--validate-every", "0", "--checkpoint-every", "0", "--lambda-id", "0",
                   "--progress-interval", "0.01"], log)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [m for m in map(LINE.match, log.read_text().splitlines()) if m]
    assert lines and {(m["what"], m["unit"], m["total"]) for m in lines} == {("training", "steps", "3")}
    assert lines[-1]["done"] == "3"
    logged = json.loads((tmp_path / "t" / "losses.jsonl").read_text().splitlines()[-1])
    for term in ("loss", "mse", "map"):
        assert f"{term} {logged[term]:.4g}" in lines[-1]["detail"]


def test_a_second_run_is_refused_before_the_preflight(faces):
    """The lock is taken first: with OUT held, even a run whose model does not exist is refused for
    the lock (the preflight, which would name the model, never runs)."""
    out = faces / "run"
    out.mkdir()
    with open(out / ".lock", "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 1, fmu generate\n")
        held.flush()
        res = subprocess.run([sys.executable, "-m", "fmu.app", "generate", str(faces / "faces.csv"), "--out",
                              str(out), "--base-model", str(faces / "no-such-model")], capture_output=True, text=True,
                             timeout=600, env={**os.environ, "COLUMNS": "300"})
    assert res.returncode == 2 and "is in use by another fmu run (pid 1, fmu generate)" in res.stderr, res.stderr
    assert "--base-model" not in res.stderr


def test_a_usage_error_leaves_no_out_folder_behind(faces):
    res = cli("generate", faces / "faces.csv", "--out", faces / "new", "--base-model", faces / "no-such-model")
    assert res.exit_code == 2 and "--base-model" in res.output, res.output
    assert not (faces / "new").exists()


def test_a_manifest_of_only_invalid_rows_loads_no_model(faces, tiny_preset, monkeypatch):
    import fmu.core.faces as faces_package
    import fmu.core.runner.generate as generate_module

    def boom(*args, **kwargs):
        raise AssertionError("a model was loaded for a run with no valid row")

    monkeypatch.setattr(generate_module, "_make_worker", boom)
    monkeypatch.setattr(generate_module, "get_backend", boom, raising=False)
    monkeypatch.setattr(faces_package, "get_backend", boom)
    rows = {"id": ["a", "b"], "reference": ["missing.png", ""], "prompt": ["a", "b"]}
    pl.DataFrame(rows).write_csv(faces / "bad.csv")
    res = cli("generate", faces / "bad.csv", "--out", faces / "run", "--steps", "2")
    assert res.exit_code == 1, res.output
    assert set(pl.read_parquet(faces / "run" / "results.parquet")["status"]) == {"failed"}
    assert json.loads((faces / "run" / "run.json").read_text())["face_identity"] == {"backend": "dlib",
                                                                                    "loaded": False}
