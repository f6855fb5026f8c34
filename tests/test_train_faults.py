"""Training answers a stop signal while a batch is being built, and refuses or reports bad state
in one line (issue 23 items 3 and 8).

- SIGTERM while `fmu train` is loading a batch: the items are asked between each other, so the
  batch is abandoned, the step before it is saved, and the command exits 143.
- A crafted `scheduler.json` / `optimizer.json` in the checkpoint `--resume` names (not an object,
  wrong types, a key of its own, NaN, nesting past the recursion limit, 50 MB) is one line naming
  the file and exit 2.
- A disk that fills while a checkpoint is written: one line, exit 1, the previous checkpoint
  intact (the resume from it finishes the run).
- `fmu train` / `fmu finetune` on an --out another run holds are refused (exit 2, naming the
  holder) before any model, configuration or checkpoint is read, and write nothing there.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from cli_run import invoke
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def fmu(*args) -> list[str]:
    return [sys.executable, "-m", "fmu.app", *map(str, args)]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def data(tmp_path_factory, photos, tiny_preset):
    from fmu.training.prepare import PrepareConfig, run_prepare

    src = tmp_path_factory.mktemp("faults_src")
    for name in ("astronaut.png", "tom_hanks.png"):
        image = Image.open(photos[name]).convert("RGB")
        image.save(src / name)
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(src / f"flip_{name}")
    summary = run_prepare(PrepareConfig(source=src, out=src / "data", resolution=64, dedupe="exact"))
    assert summary.ok == 4
    return summary.manifest


def png_bytes(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size), 255).save(buffer, "PNG")
    return buffer.getvalue()


def open_when_read(fifo: Path, proc: subprocess.Popen, timeout: float = 400) -> int:
    """The write end of `fifo`, opened once `proc` opens it for reading (the event: it is loading
    that item); fails when `proc` ends first."""
    deadline = time.time() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        else:
            os.set_blocking(fd, True)
            return fd
        assert proc.poll() is None, f"ended before loading the item: {proc.communicate()[1][-3000:]}"
        assert time.time() < deadline, "the item was never loaded"
        time.sleep(0.05)


def slow_item_manifest(data: Path, seed: int) -> tuple[Path, Path]:
    """A copy of the prepared manifest whose row at the head of the second batch has a mask that is
    a FIFO: loading that item waits until the test writes it (a file on a slow disk, on demand).
    (manifest, fifo)"""
    from fmu.training.data import DataOrder

    df = pl.read_parquet(data)
    second = DataOrder(df.height, 2, seed).epoch_batches(0)[1]
    assert second[0] != 0  # row 0 is loaded before training (the width check)
    fifo = data.parent / f"slow_mask_{seed}.png"
    os.mkfifo(fifo)
    masks = ["[]"] * df.height
    masks[second[0]] = json.dumps([{"mask": fifo.name, "token_indices": [1]}])
    manifest = data.parent / f"slow_{seed}.parquet"
    df.with_columns(pl.Series("masks", masks)).write_parquet(manifest)
    return manifest, fifo


def test_sigterm_while_a_batch_loads_stops_between_items_and_saves(data, tmp_path):
    from fmu.training.data import DataOrder

    seed = next(s for s in range(1, 50) if DataOrder(4, 2, s).epoch_batches(0)[1][0] != 0)
    manifest, fifo = slow_item_manifest(data, seed)
    out = tmp_path / "run"
    cmd = fmu("train", "--data", manifest, "--out", out, "--max-steps", 4, "--batch-size", 2, "--lambda-id", 0,
              "--seed", seed, "--checkpoint-every", 0)
    proc = subprocess.Popen(cmd, env=env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        fd = open_when_read(fifo, proc)  # step 1 is done; the first item of batch 2 is being read
        proc.send_signal(signal.SIGTERM)
        os.write(fd, png_bytes())  # the slow item arrives after the signal; the batch has one more item
        os.close(fd)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    info = json.loads((out / "run.json").read_text())["summary"]
    # stopped inside batch 2: its step never ran (before, the whole batch loaded and step 2 trained)
    assert info["status"] == "interrupted" and info["signal"] == "SIGTERM" and info["steps"] == 1
    checkpoint = out / "checkpoints" / "checkpoint-00000001"
    assert info["checkpoint"] == str(checkpoint) and (checkpoint / "COMPLETE").is_file()
    assert json.loads((checkpoint / "rank_0.json").read_text())["position"] == 1  # resume loads batch 2 again
    assert pl.read_parquet(out / "losses.parquet")["step"].to_list() == [1]
    assert (out / "adapter.safetensors").is_file()


def logged_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 400) -> None:
    """Returns once `step` is in OUT/losses.jsonl (the event: that step is done); fails when `proc`
    ends first."""
    deadline = time.time() + timeout
    log = out / "losses.jsonl"
    while not (log.is_file() and any(json.loads(line)["step"] == step for line in log.read_text().splitlines()
                                     if line.strip().endswith("}"))):
        assert proc.poll() is None, f"ended before step {step}: {proc.communicate()[1][-3000:]}"
        assert time.time() < deadline, f"step {step} never finished"
        time.sleep(0.05)


def test_sigterm_while_dataloader_workers_hold_a_batch_leaves_the_wait_and_saves(data, tmp_path):
    """--workers 1: a DataLoader worker process loads the items, where the signal does not reach. Its
    second batch never arrives (the FIFO is never written); SIGTERM once step 1 is done must still stop
    the run and save step 1 (before, the loop waited for that batch for ever)."""
    from fmu.training.data import DataOrder

    seeds = [s for s in range(1, 80) if DataOrder(4, 2, s).epoch_batches(0)[1][0] != 0]
    seed = seeds[1]  # not the other FIFO test's seed: each test makes its own FIFO
    manifest, fifo = slow_item_manifest(data, seed)
    out = tmp_path / "run"
    cmd = fmu("train", "--data", manifest, "--out", out, "--max-steps", 4, "--batch-size", 2, "--lambda-id", 0,
              "--seed", seed, "--checkpoint-every", 0, "--workers", 1)
    proc = subprocess.Popen(cmd, env=env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fd = None
    try:
        fd = open_when_read(fifo, proc)  # the worker is on batch 2's first item (kept open: no EOF for it)
        logged_step(out, 1, proc)        # step 1 is done: the loop waits for batch 2
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        if fd is not None:
            os.close(fd)
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    info = json.loads((out / "run.json").read_text())["summary"]
    assert info["status"] == "interrupted" and info["signal"] == "SIGTERM" and info["steps"] == 1
    checkpoint = out / "checkpoints" / "checkpoint-00000001"
    assert json.loads((checkpoint / "rank_0.json").read_text())["position"] == 1  # resume loads batch 2 again
    assert pl.read_parquet(out / "losses.parquet")["step"].to_list() == [1]


# -- a crafted checkpoint -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory):
    from fmu.training.config import load_config
    from fmu.training.trainer import run_training

    out = tmp_path_factory.mktemp("to_craft")
    run_training(load_config(None, dict(data=data, out=out, max_steps=2, batch_size=2, lambda_id=0,
                                        checkpoint_every=2)))
    return out / "checkpoints" / "checkpoint-00000002"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def crafted(real: dict, name: str, case: str) -> str:
    """The text of `name` (scheduler.json / optimizer.json) crafted as `case`."""
    if case == "not an object":
        return json.dumps([real])
    if case == "NaN":
        return json.dumps(real).replace("}", ', "x": NaN}', 1) if name == "scheduler.json" else \
            json.dumps(real).replace('"lr": ', '"lr": NaN, "y": ', 1)
    if case == "nesting":
        return '{"base_lrs": ' + nested(200_000) + "}"
    if case == "50 MB":
        return json.dumps({**real, "padding": "x" * 50 * 2**20})
    if case == "wrong type":
        if name == "scheduler.json":
            return json.dumps({**real, "last_epoch": "2"})
        return json.dumps({**real, "param_groups": [{**g, "lr": "fast"} for g in real["param_groups"]]})
    if case == "a key of its own":  # would set the scheduler's optimizer attribute, or a group's
        if name == "scheduler.json":
            return json.dumps({**real, "optimizer": 5})
        return json.dumps({**real, "param_groups": [{**g, "params": 5} for g in real["param_groups"]]})
    if case == "deep value":
        if name == "scheduler.json":
            return json.dumps({**real, "_last_lr": [json.loads(nested(500))]})
        return json.dumps({**real, "state": {"0": {"step": json.loads(nested(500))}}})
    raise AssertionError(case)


CASES = ["not an object", "NaN", "nesting", "50 MB", "wrong type", "a key of its own", "deep value"]


@pytest.mark.parametrize("name", ["scheduler.json", "optimizer.json"])
def test_a_crafted_state_file_is_one_line_and_exit_2(checkpoint, data, tmp_path, name):
    import shutil

    real = json.loads((checkpoint / name).read_text())
    for case in CASES:
        tampered = tmp_path / f"ck-{case.replace(' ', '_')}"
        shutil.copytree(checkpoint, tampered)
        (tampered / name).write_text(crafted(real, name, case))
        result = invoke("train", "--data", data, "--out", tmp_path / f"out-{case}", "--max-steps", 3,
                        "--batch-size", 2, "--lambda-id", 0, "--resume", tampered)
        assert result.exit_code == 2, (case, result.output[-2000:])
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and name in errors[0] and str(tampered) in errors[0], (case, result.output[-2000:])
        assert "Traceback" not in result.output


def test_the_real_state_files_still_resume(checkpoint, data, tmp_path):
    """Control: the same command on the checkpoint as written resumes and finishes."""
    result = invoke("train", "--data", data, "--out", tmp_path / "out", "--max-steps", 3, "--batch-size", 2,
                    "--lambda-id", 0, "--resume", checkpoint)
    assert result.exit_code == 0, result.output[-2000:]
    assert json.loads((tmp_path / "out" / "run.json").read_text())["summary"]["steps"] == 3


# -- a full disk while a checkpoint is written ----------------------------------------------------

def test_disk_full_writing_a_checkpoint_keeps_the_last_one(data, tmp_path, monkeypatch):
    from fmu.training.checkpoint import read_checkpoint

    out = tmp_path / "run"
    real_fsync, refused = os.fsync, []

    def fsync(fd):  # the kernel's answer for a full disk, on the files of the second checkpoint
        if ".checkpoint-00000002.tmp" in os.readlink(f"/proc/self/fd/{fd}"):
            refused.append(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    args = ["train", "--data", data, "--out", out, "--max-steps", 3, "--batch-size", 2, "--lambda-id", 0,
            "--checkpoint-every", 1]
    monkeypatch.setattr(os, "fsync", fsync)
    result = invoke(*args)
    assert result.exit_code == 1, result.output[-2000:]
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "checkpoint-00000002" in errors[0]
    assert "Traceback" not in result.output and refused
    root = out / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-00000001"]  # no half-written folder
    kept = read_checkpoint(root / "checkpoint-00000001", 0, 1, "full")
    assert (kept.step, kept.position) == (1, 1)

    monkeypatch.setattr(os, "fsync", real_fsync)  # space again: the same command resumes from it
    resumed = invoke(*args, "--resume", "latest")
    assert resumed.exit_code == 0, resumed.output[-2000:]
    assert json.loads((out / "run.json").read_text())["summary"]["steps"] == 3
    assert pl.read_parquet(out / "losses.parquet")["step"].to_list() == [1, 2, 3]


# -- the --out lock comes first -------------------------------------------------------------------

@pytest.fixture
def held_out(tmp_path):
    """An --out whose lock another process holds (until the test ends). (out, holder pid)"""
    out = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom fmu.core.out_lock import locked_output\n"
                               f"with locked_output({str(out)!r}, 'test'):\n"
                               "    print('held', flush=True)\n    sys.stdin.read()\n"],
                              env=env(), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield out, holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


@pytest.fixture
def nothing_heavy(monkeypatch):
    """Every step a training command takes before it writes (checks that read model configs and
    checkpoints, preparation, the model) fails the test if it is reached; returns the ones reached."""
    import fmu.training.checkpoint
    import fmu.training.finetune
    import fmu.training.preflight
    import fmu.training.trainer

    reached = []

    def reach(name):
        def step(*args, **kwargs):
            reached.append(name)
            raise AssertionError(f"{name} ran before the --out lock was taken")
        return step

    for module, name in [(fmu.training.trainer, "check_training"), (fmu.training.trainer, "build_model"),
                         (fmu.training.trainer, "run_training"), (fmu.training.checkpoint, "read_checkpoint"),
                         (fmu.training.preflight, "check_finetune_backend"),
                         (fmu.training.finetune, "prepared_manifest")]:
        monkeypatch.setattr(module, name, reach(name))
    return reached


def test_train_on_a_held_out_is_refused_before_anything_is_read(data, held_out, nothing_heavy):
    out, pid = held_out
    result = invoke("train", "--data", data, "--out", out, "--max-steps", 2, "--lambda-id", 0, "--resume", "latest")
    assert result.exit_code == 2, result.output[-2000:]
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"pid {pid}, fmu test" in errors[0] and "in use by another fmu run" in errors[0]
    assert nothing_heavy == [] and sorted(p.name for p in out.iterdir()) == [".lock"]


def test_finetune_on_a_held_out_is_refused_before_preparing(photos, tiny_preset, held_out, nothing_heavy, tmp_path):
    _, adapter = tiny_preset
    out, pid = held_out
    faces = tmp_path / "faces"  # a plain image folder: finetune would prepare it into OUT/data
    faces.mkdir()
    Image.open(photos["astronaut.png"]).convert("RGB").save(faces / "a.png")
    result = invoke("finetune", "--from", adapter, "--data", faces, "--out", out, "--max-steps", 2)
    assert result.exit_code == 2, result.output[-2000:]
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"pid {pid}, fmu test" in errors[0]
    assert nothing_heavy == [] and sorted(p.name for p in out.iterdir()) == [".lock"]
