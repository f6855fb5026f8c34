"""kill -9 in the middle of generate (one and two devices), prepare, score and train, then the
same command again: nothing lost, nothing duplicated, no half-written image or table.

Right after each kill, every visible file must be complete (temp files of the atomic writer are
hidden dot-files ending in .tmp and never match the names readers look for).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def fmu(*args) -> list[str]:
    return [sys.executable, "-m", "fmu.app", *map(str, args)]


def env(fmu_home) -> dict:
    return {**os.environ, "FMU_HOME": str(fmu_home), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def kill_when(cmd, environ, ready, timeout=240.0) -> subprocess.Popen:
    """Start `cmd`, SIGKILL it as soon as `ready(proc)` is true (asserting it got there alive)."""
    proc = subprocess.Popen(cmd, env=environ, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while not ready(proc):
        assert proc.poll() is None, f"finished before the kill point: {proc.stderr.read()[-2000:]!r}"
        assert time.time() < deadline, "no progress visible on disk"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc


def rerun(cmd, environ, codes=(0,)) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=environ, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode in codes, done.stderr[-3000:]
    return done


def assert_only_complete_files(root: Path) -> None:
    """Every file a reader could pick up is whole: images decode, tables and arrays load."""
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        if p.name.endswith(".tmp"):
            assert p.name.startswith("."), f"temp file visible as a final name: {p}"
            continue
        if p.suffix == ".png":
            with Image.open(p) as img:
                img.load()
        elif p.suffix == ".parquet":
            pl.read_parquet(p)
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                [z[k] for k in z.files]
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".safetensors":
            from safetensors.numpy import load_file

            load_file(p)


def count(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern))) if folder.exists() else 0


# -- generate -------------------------------------------------------------------------------------

ROWS = 5
STEPS = "12"  # long enough per unit that the kill lands before the last unit, even on a fast machine


@pytest.fixture(scope="module")
def gen_inputs(tmp_path_factory, photos, tiny_preset):
    root = tmp_path_factory.mktemp("crash_gen")
    shutil.copyfile(photos["tom_hanks.png"], root / "hanks.png")
    pl.DataFrame({"id": [f"r{i}" for i in range(ROWS)], "reference": ["hanks.png"] * ROWS,
                  "prompt": [f"a photo number {i}" for i in range(ROWS)]}).write_csv(root / "m.csv")
    return root / "m.csv"


def _assert_generated(out: Path) -> None:
    df = pl.read_parquet(out / "results.parquet")
    assert sorted(df["id"]) == [f"r{i}" for i in range(ROWS)]
    assert df.select("id", "k").is_unique().all() and set(df["status"]) == {"ok"}
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"r{i}_0.png" for i in range(ROWS)]
    assert not list((out / ".shards").glob("*.parquet"))  # merged away
    assert_only_complete_files(out)


@pytest.fixture(scope="module")
def generated(gen_inputs, fmu_home, tmp_path_factory):
    """A generate run killed after two finished units, state checked, then resumed."""
    out = tmp_path_factory.mktemp("crash_gen_out") / "out"
    cmd = fmu("generate", gen_inputs, "--out", out, "--steps", STEPS, "--batch-size", "1", "--no-shading")
    kill_when(cmd, env(fmu_home), lambda p: count(out / ".shards", "*.parquet") >= 2)
    assert_only_complete_files(out)
    shards = pl.concat([pl.read_parquet(p) for p in (out / ".shards").glob("*.parquet")])
    assert 2 <= shards.height < ROWS and set(shards["status"]) == {"ok"}
    recorded = {Path(i).name: (out / i).stat().st_mtime_ns for i in shards["image"]}
    assert not (out / "results.parquet").exists()
    rerun(cmd, env(fmu_home))
    return out, recorded


def test_generate_killed_resumes_without_loss_or_duplicates(generated):
    out, recorded = generated
    _assert_generated(out)
    # the units finished before the kill were not redone
    assert {n: (out / "images" / n).stat().st_mtime_ns for n in recorded} == recorded


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_two_device_run_killed_leaves_no_orphan_workers(gen_inputs, fmu_home, tmp_path):
    """kill -9 of the parent: its worker processes exit too (an orphan would keep writing into
    --out under the re-run, then wait forever on the dead parent's queue holding a model)."""
    out = tmp_path / "out"
    cmd = fmu("generate", gen_inputs, "--out", out, "--steps", STEPS, "--batch-size", "1", "--no-shading",
              "--devices", "cpu,cpu")
    workers: list[int] = []

    def ready(proc):
        workers[:] = _children(proc.pid)
        return count(out / ".shards", "*.parquet") >= 1

    kill_when(cmd, env(fmu_home), ready)
    assert len(workers) >= 2, workers  # two workers (+ multiprocessing's resource tracker)
    deadline = time.time() + 15
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    lingering = [w for w in workers if _alive(w)]
    for w in lingering:  # clean up our own orphans before failing
        os.kill(w, signal.SIGKILL)
    assert not lingering, "worker processes outlived the killed parent"
    assert_only_complete_files(out)
    rerun(fmu("generate", gen_inputs, "--out", out, "--steps", STEPS, "--batch-size", "1", "--no-shading"),
          env(fmu_home))
    _assert_generated(out)


@pytest.mark.parametrize("devices", ["cpu", "cpu,cpu"])
def test_sigterm_stops_generate_with_results_and_run_json(gen_inputs, fmu_home, tmp_path, devices):
    """SIGTERM (a scheduler's stop) mid-run: exit 143 after merging the finished units into
    results.parquet and writing run.json; no worker left behind; the same command finishes."""
    out = tmp_path / "out"
    cmd = fmu("generate", gen_inputs, "--out", out, "--steps", STEPS, "--batch-size", "1", "--no-shading",
              "--devices", devices)
    proc = subprocess.Popen(cmd, env=env(fmu_home), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 240
    while count(out / ".shards", "*.parquet") < 1:
        assert proc.poll() is None, f"finished before the stop point: {proc.stderr.read()[-2000:]!r}"
        assert time.time() < deadline, "no progress visible on disk"
        time.sleep(0.01)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, stderr[-2000:]
    assert "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr, stderr[-2000:]
    df = pl.read_parquet(out / "results.parquet")
    assert 1 <= df.height < ROWS and set(df["status"]) == {"ok"}
    assert all((out / i).is_file() for i in df["image"])
    info = json.loads((out / "run.json").read_text())
    assert info["summary"]["interrupted"] == signal.SIGTERM and info["summary"]["ok"] == df.height
    deadline = time.time() + 15
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)], "worker processes outlived the stop"
    assert_only_complete_files(out)
    again = rerun(cmd, env(fmu_home))
    assert f"{df.height} of them finished earlier and kept" in " ".join(again.stdout.split())
    _assert_generated(out)


# -- score ----------------------------------------------------------------------------------------

def _score_table(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(folder / "scores.parquet").drop("image", "reference", "condition").sort("id", "k")


def test_score_killed_then_rerun_resumes_and_matches_an_uninterrupted_score(generated, fmu_home, tmp_path):
    out, _ = generated
    whole = tmp_path / "whole"  # the same run scored without interruption, for comparison
    shutil.copytree(out, whole)
    args = ("--metrics", "facesim,consistency", "--no-report")
    rerun(fmu("score", whole, *args), env(fmu_home), codes=(0, 1))

    cmd = fmu("score", out, *args)
    state = out / ".score_state.json"
    # the kill point: FaceSim finished and saved, Pose/Light (a second or more) under way
    kill_when(cmd, env(fmu_home), lambda p: state.exists())
    assert_only_complete_files(out)
    assert json.loads(state.read_text())["done"] == ["facesim_dlib"]
    assert not (out / "scores.parquet").exists()  # the final tables are written once, at the end
    rerun(cmd, env(fmu_home), codes=(0, 1))  # 1: the tiny preset's noise images have no face
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_metrics"] == ["facesim_dlib"] and summary["n_requested"] == ROWS
    assert not state.exists()
    scores, results = _score_table(out), pl.read_parquet(out / "results.parquet")
    assert scores.height == results.height and scores.select("id", "k").is_unique().all()
    assert sorted(scores["id"]) == sorted(results["id"])
    assert scores.equals(_score_table(whole), null_equal=True)
    assert_only_complete_files(out)


# -- prepare and train ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_images(tmp_path_factory, photos):
    src = tmp_path_factory.mktemp("crash_src")
    for name in ("astronaut.png", "tom_hanks.png"):
        image = Image.open(photos[name]).convert("RGB")
        stem = Path(name).stem
        image.save(src / f"{stem}.png")
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(src / f"{stem}_flip.png")
        image.rotate(5).save(src / f"{stem}_tilt.png")
    return src


def _cache_files(data: Path) -> dict[str, int]:
    return {str(p.relative_to(data)): p.stat().st_mtime_ns for p in (data / "cache").rglob("*.npz")}


@pytest.fixture(scope="module")
def prepared(train_images, fmu_home, tmp_path_factory):
    data = tmp_path_factory.mktemp("crash_data") / "data"
    cmd = fmu("prepare", train_images, "--out", data, "--resolution", "64", "--dedupe", "exact")  # keep the flips
    kill_when(cmd, env(fmu_home), lambda p: count(data / "cache" / "faces", "*/*/*.npz") >= 2)
    assert_only_complete_files(data)
    assert not (data / "train.parquet").exists()
    cached = _cache_files(data)
    rerun(cmd, env(fmu_home))
    return data, cached


def test_prepare_killed_resumes_from_its_cache(prepared, train_images):
    data, cached = prepared
    stems = sorted(p.stem for p in train_images.glob("*.png"))
    train = pl.read_parquet(data / "train.parquet")
    assert sorted(train["id"]) == stems and train["id"].is_unique().all()
    report = pl.read_parquet(data / "report.parquet")
    assert report.height == len(stems) and set(report["status"]) == {"ok"}
    # exactly one face analysis and one shading condition per image; the ones cached before the
    # kill were reused as they were
    after = _cache_files(data)
    assert sum("faces" in k for k in after) == len(stems)
    assert sum("shading" in k for k in after) == len(stems)
    assert {k: after[k] for k in cached} == cached
    assert_only_complete_files(data)


@pytest.fixture(scope="module")
def trained(prepared, fmu_home, tmp_path_factory):
    """Killed once step 3 is logged (so checkpoint 2 is complete and step 3 is past it), resumed.
    Ten steps, so that the kill lands well before the end even on a fast machine."""
    data, _ = prepared
    run = tmp_path_factory.mktemp("crash_train") / "run"
    cmd = fmu("train", "--data", data, "--out", run, "--max-steps", "10", "--batch-size", "2",
              "--checkpoint-every", "2", "--lambda-id", "0", "--seed", "1")
    losses = run / "losses.jsonl"
    kill_when(cmd, env(fmu_home), lambda p: losses.exists() and len(losses.read_text().splitlines()) >= 3)
    assert_only_complete_files(run)
    assert (run / "checkpoints" / "checkpoint-00000002" / "COMPLETE").exists()
    assert not (run / "adapter.safetensors").exists()
    rerun([*cmd, "--resume", "latest"], env(fmu_home))
    return run


def test_train_killed_after_a_checkpoint_resumes_to_the_end(trained):
    from fmu.core.model.adapter import read_adapter
    from fmu.training.checkpoint import list_checkpoints

    tensors, _ = read_adapter(trained / "adapter.safetensors")
    assert tensors and all(bool(v.float().isfinite().all()) for v in tensors.values())
    assert [p.name for p in list_checkpoints(trained)] == [f"checkpoint-{s:08d}" for s in (6, 8, 10)]  # last 3
    assert_only_complete_files(trained)
    steps = [json.loads(line)["step"] for line in (trained / "losses.jsonl").read_text().splitlines()]
    assert set(steps) == set(range(1, 11))  # every step logged


def test_train_resume_does_not_duplicate_log_lines(trained):
    """Steps 3.. logged by the killed run are past checkpoint 2: the resume drops and redoes them."""
    steps = [json.loads(line)["step"] for line in (trained / "losses.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))
    samples = (trained / "samples" / "rank0.jsonl").read_text().splitlines()
    positions = [json.loads(line)["position"] for line in samples]
    assert positions == list(range(10))
