"""Training never loses work, and resuming never runs code.

- `fmu train` stopped by SIGINT mid-run saves a checkpoint at the next step boundary, the adapter
  so far, losses.parquet and run.json ("interrupted"), says how to go on, exits 130; `--resume
  latest` continues at that step and ends with exactly the weights of an uninterrupted run.
- `fmu finetune` stopped by SIGTERM does the same with its LoRA (exit 143).
- Every file of a checkpoint, replaced in turn by a pickle whose payload would create a file, is
  refused with one line before anything is built, and the payload never runs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
STEPS = 8


def fmu(*args) -> list[str]:
    return [sys.executable, "-m", "fmu.app", *map(str, args)]


def env() -> dict:
    # one thread: CPU float results depend on the thread count, and the runs below are compared bit for bit
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def data(tmp_path_factory, photos, tiny_preset):
    from fmu.training.prepare import PrepareConfig, run_prepare

    src = tmp_path_factory.mktemp("interrupt_src")
    for name in ("astronaut.png", "tom_hanks.png"):
        image = Image.open(photos[name]).convert("RGB")
        image.save(src / name)
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(src / f"flip_{name}")
    summary = run_prepare(PrepareConfig(source=src, out=src / "data", resolution=64, dedupe="exact"))  # keep the flips
    assert summary.ok == 4
    return summary.manifest


def train_args(data: Path, out: Path) -> list:
    return ["train", "--data", data, "--out", out, "--max-steps", STEPS, "--batch-size", 2, "--lambda-id", 0,
            "--seed", 1, "--lr", "1e-3"]


def stop_after(cmd: list, losses: Path, k: int, signum: int, timeout: float = 400) -> subprocess.CompletedProcess:
    """Run `cmd`, send `signum` once `losses` has k lines, wait for the process to end."""
    proc = subprocess.Popen(cmd, env=env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while not (losses.exists() and len(losses.read_text().splitlines()) >= k):
        assert proc.poll() is None, f"ended before step {k}: {proc.communicate()[1][-3000:]}"
        assert time.time() < deadline, "no training step within the time limit"
        time.sleep(0.05)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def reference_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = subprocess.run(fmu(*train_args(data, out)), env=env(), cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_sigint_saves_then_resume_latest_ends_with_the_same_weights(data, reference_run, tmp_path):
    out = tmp_path / "run"
    cmd = fmu(*train_args(data, out))
    stopped = stop_after(cmd, out / "losses.jsonl", 3, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    info = json.loads((out / "run.json").read_text())
    k = info["summary"]["steps"]
    assert 3 <= k < STEPS  # stopped at the boundary after the signal, not at the end
    assert info["summary"]["status"] == "interrupted" and info["summary"]["signal"] == "SIGINT"
    checkpoint = out / "checkpoints" / f"checkpoint-{k:08d}"
    assert info["summary"]["checkpoint"] == str(checkpoint) and (checkpoint / "COMPLETE").is_file()
    message = " ".join(stopped.stderr.split())
    assert f"interrupted (SIGINT) at step {k} of {STEPS}" in message and "--resume latest" in message
    # the adapter so far is the checkpoint's, and the loss table has every step done
    saved = tensors(out / "adapter.safetensors")
    assert saved.keys() == tensors(checkpoint / "adapter.safetensors").keys()
    assert all(torch.equal(v, tensors(checkpoint / "adapter.safetensors")[n]) for n, v in saved.items())
    assert pl.read_parquet(out / "losses.parquet")["step"].to_list() == list(range(1, k + 1))

    resumed = subprocess.run([*cmd, "--resume", "latest"], env=env(), cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # (rich wraps long paths at the terminal width: compared without whitespace)
    assert f"resumedfrom{checkpoint}atstep{k}" in "".join(resumed.stdout.split())
    assert json.loads((out / "run.json").read_text())["summary"]["status"] == "finished"
    # exactly the weights (and losses) of the run nobody interrupted: compared bit for bit
    want, got = tensors(reference_run / "adapter.safetensors"), tensors(out / "adapter.safetensors")
    assert want.keys() == got.keys()
    different = [n for n in want if not torch.equal(want[n], got[n])]
    assert not different, different[:5]
    assert (out / "losses.jsonl").read_text() == (reference_run / "losses.jsonl").read_text()


def test_sigterm_stops_finetune_with_its_lora(data, tiny_preset, tmp_path):
    _, adapter = tiny_preset
    out = tmp_path / "ft"
    cmd = fmu("finetune", "--from", adapter, "--data", data, "--out", out, "--max-steps", 40, "--batch-size", 2,
              "--rank", 2, "--lambda-id", 0)
    stopped = stop_after(cmd, out / "losses.jsonl", 2, signal.SIGTERM)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    info = json.loads((out / "run.json").read_text())
    k = info["summary"]["steps"]
    assert info["command"] == "finetune" and info["summary"]["status"] == "interrupted" and 2 <= k < 40
    from fmu.core.model.lora import read_lora_file

    lora, meta = read_lora_file(out / "lora.safetensors")
    assert json.loads(meta["steps"]) == k and any(v.abs().sum() > 0 for n, v in lora.items() if "lora_B" in n)
    assert (out / "checkpoints" / f"checkpoint-{k:08d}" / "lora.safetensors").is_file()
    assert pl.read_parquet(out / "losses.parquet")["step"].to_list() == list(range(1, k + 1))


def test_default_checkpoint_interval_follows_max_steps():
    from fmu.training.config import FINETUNE_DEFAULTS, load_config

    assert load_config(None, {}).resolved_checkpoint_every() == 100            # 1000 steps
    assert load_config(None, {}, FINETUNE_DEFAULTS).resolved_checkpoint_every() == 50
    assert load_config(None, {"max_steps": 3}).resolved_checkpoint_every() == 1
    assert load_config(None, {"max_steps": 10**6}).resolved_checkpoint_every() == 20000  # the authors'
    assert load_config(None, {"checkpoint_every": 7}).resolved_checkpoint_every() == 7   # as set


# -- a tampered checkpoint ------------------------------------------------------------------------

class Payload:
    """Unpickled, it creates the file `path` (what any code payload could do)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory):
    from fmu.training.config import load_config
    from fmu.training.trainer import run_training

    out = tmp_path_factory.mktemp("to_tamper")
    run_training(load_config(None, dict(data=data, out=out, max_steps=2, batch_size=2, lambda_id=0,
                                        checkpoint_every=2)))
    return out / "checkpoints" / "checkpoint-00000002"


def test_the_payload_is_live(tmp_path):
    """Control: loaded the unsafe way, the planted pickle does create its file."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))  # noqa: S301  (the point: this is the unsafe way)
    assert marker.exists()


@pytest.mark.parametrize("style", ["pickle", "torch.save"])
def test_every_file_of_a_tampered_checkpoint_is_refused_unexecuted(checkpoint, data, tmp_path, style):
    from fmu.core.errors import UsageError
    from fmu.training.config import load_config
    from fmu.training.trainer import run_training

    files = sorted(p.name for p in checkpoint.iterdir())
    assert {"COMPLETE", "adapter.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json",
            "rank_0.json", "rank_0.safetensors"} <= set(files)
    for name in files:
        tampered = tmp_path / f"ck-{name}"
        shutil.copytree(checkpoint, tampered)
        marker = tmp_path / f"payload-ran-{name}"
        if style == "pickle":
            (tampered / name).write_bytes(pickle.dumps(Payload(marker)))
        else:
            torch.save(Payload(marker), tampered / name)
        cfg = load_config(None, dict(data=data, out=tmp_path / f"out-{name}", max_steps=3, batch_size=2,
                                     lambda_id=0, resume=str(tampered)))
        with pytest.raises(UsageError) as refused:
            run_training(cfg)
        message = str(refused.value)
        assert name in message and "\n" not in message, message
        assert not marker.exists(), f"the payload in {name} ran"
        assert not (tmp_path / f"out-{name}").exists()  # refused before anything was written


def test_tampered_checkpoint_is_one_line_and_exit_2(checkpoint, data, tmp_path):
    from fmu.app import app

    tampered = tmp_path / "ck"
    shutil.copytree(checkpoint, tampered)
    marker = tmp_path / "ran"
    (tampered / "scheduler.json").write_bytes(pickle.dumps(Payload(marker)))
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "out"),
                                      "--resume", str(tampered)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint") and "scheduler.json" in lines[0]
    assert not marker.exists()
