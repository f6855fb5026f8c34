"""`--devices` for any torch accelerator: parsed against what torch reports, refused with torch's
own answer, `auto` in the order cuda, xpu, mps; `fmu doctor` lists them; model timings use device
events on an accelerator. This machine has a CPU-only torch, so accelerators that exist are played
by replacing what torch reports (`core.devices.accelerator`), never by faking a device's work."""

from __future__ import annotations

import time
import typing

import pytest
import torch
from typer.testing import CliRunner

from fmu.app import app
from fmu.core import devices
from fmu.core.devices import Accelerator, ModelClock, face_device, parse_device, parse_devices
from fmu.core.errors import UsageError


def test_this_machine_reports_no_accelerator_and_says_why():
    found = {a.kind: a for a in devices.accelerators()}
    assert list(found) == ["cuda", "xpu", "mps"] and not any(a.usable for a in found.values())
    assert found["cuda"].reason == "this torch is a CPU build (torch.version.cuda is None)"
    assert "torch.xpu" in found["xpu"].reason
    assert found["mps"].reason.startswith("torch.backends.mps.is_available() is False")
    assert torch.backends.mps.is_available() is False  # the reason is torch's own answer
    assert parse_devices("auto") == ["cpu"] and parse_device("auto") == "cpu"


def test_cpu_lists_and_spelling():
    assert parse_devices("cpu") == ["cpu"]
    assert parse_devices(" CPU , cpu ") == ["cpu", "cpu"]
    for bad, message in [("tpu", "unknown device 'tpu'"), ("cuda:x", "unknown device"),
                         ("cpu:1", "cpu takes no index"), (",", "use auto, cpu")]:
        with pytest.raises(UsageError, match=message):
            parse_devices(bad)
    with pytest.raises(UsageError, match="one device, not 2"):
        parse_device("cpu,cpu")


def test_mps_xpu_and_cuda_requested_here_are_usage_errors_naming_what_torch_reports():
    mps = r"device 'mps' requested, but torch\.backends\.mps\.is_available\(\) is False"
    with pytest.raises(UsageError, match=mps):
        parse_devices("mps")
    with pytest.raises(UsageError, match=r"device 'xpu:1' requested, but .*torch\.xpu"):
        parse_devices("xpu:1")
    with pytest.raises(UsageError, match=r"device 'cuda' requested, but this torch is a CPU build"):
        parse_devices("cpu,cuda")


def test_generate_devices_mps_exits_2_with_torchs_answer(tmp_path):
    """Must-show: `fmu generate --devices mps` on a machine without MPS."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,reference,prompt\na,x.png,a photo\n")
    result = CliRunner().invoke(app, ["generate", str(manifest), "--out", str(tmp_path / "out"), "--devices", "mps"])
    assert result.exit_code == 2, result.output
    assert "error: device 'mps' requested, but torch.backends.mps.is_available() is False" in result.output
    assert not (tmp_path / "out" / "results.parquet").exists()


def _pretend(monkeypatch, **counts):
    """torch reports `counts` devices of each named kind (the rest: none)."""
    real = devices.accelerator

    def accelerator(kind):
        n = counts.get(kind, 0)
        if not n:
            return real(kind)
        return Accelerator(kind, n, [f"Test {kind.upper()} {i}" for i in range(n)], "pretended")

    monkeypatch.setattr(devices, "accelerator", accelerator)


def test_auto_takes_every_device_of_the_first_accelerator(monkeypatch):
    _pretend(monkeypatch, xpu=2, mps=1)
    assert parse_devices("auto") == ["xpu:0", "xpu:1"]       # xpu before mps
    assert parse_devices("mps,xpu:1") == ["mps", "xpu:1"]
    with pytest.raises(UsageError, match=r"torch sees 2 xpu device\(s\) \(xpu:0\.\.xpu:1\)"):
        parse_devices("xpu:2")
    with pytest.raises(UsageError, match="one MPS device"):
        parse_devices("mps:1")
    _pretend(monkeypatch, cuda=3, xpu=2)
    assert parse_devices("auto") == ["cuda:0", "cuda:1", "cuda:2"]  # cuda first
    monkeypatch.undo()
    _pretend(monkeypatch, mps=1)
    assert parse_devices("auto") == ["mps"]


def test_face_models_run_on_the_same_gpu_under_cuda_else_on_the_cpu():
    assert face_device("cuda:1") == "cuda:1" and face_device("cuda") == "cuda"
    assert face_device("mps") == face_device("xpu:0") == face_device("cpu") == "cpu"


def test_doctor_lists_each_accelerator_and_fails_a_requested_one(monkeypatch):
    from fmu.core.doctor import diagnose

    report = diagnose(devices=["mps", "cpu", "auto"])
    assert report.find("runtime", "MPS").ok is False
    assert report.find("runtime", "MPS").detail.startswith("torch.backends.mps.is_available() is False")
    assert report.find("runtime", "XPU").ok is False and "torch.xpu" in report.find("runtime", "XPU").detail
    mps = report.find("device", "mps")
    assert mps.required and mps.ok is False and "is_available() is False" in mps.detail
    assert report.find("device", "cpu").ok and report.find("device", "auto").detail == "-> cpu"
    assert report.exit_code == 1
    _pretend(monkeypatch, xpu=1)
    report = diagnose(devices=["xpu:0"])
    assert report.find("runtime", "XPU").ok and report.find("runtime", "XPU").detail == "pretended: xpu:0 Test XPU 0"
    assert report.find("device", "xpu:0").detail == "Test XPU 0" and report.exit_code == 0


def test_score_device_is_checked_before_any_work(tmp_path):
    import polars as pl

    from fmu.core.scoring import ScoreOptions
    from fmu.core.scoring.run import score_rows

    with pytest.raises(UsageError, match="device 'mps' requested"):
        score_rows(pl.DataFrame(), tmp_path, ScoreOptions(device="mps"))
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- timing

def test_cpu_clock_times_the_call_itself():
    clock = ModelClock("cpu")
    assert clock.time(time.sleep, 0.05) is None
    assert clock.time(lambda a, b=0: a + b, 2, b=3) == 5
    assert 0.05 <= clock.seconds < 5


class _Event:
    """Stands for torch.Event on an accelerator: a recorded timestamp (ms) from a script."""

    log: typing.ClassVar[list] = []
    stamps: typing.ClassVar[list] = []

    def __init__(self, device=None, enable_timing=False):
        assert enable_timing and device == "cuda:1"
        self.t = None

    def record(self):
        self.t = _Event.stamps.pop(0)
        _Event.log.append("record")

    def synchronize(self):
        _Event.log.append("synchronize")

    def elapsed_time(self, end):
        return end.t - self.t


def test_accelerator_clock_sums_device_events_and_waits_only_when_read(monkeypatch):
    monkeypatch.setattr(torch, "Event", _Event)
    _Event.log, _Event.stamps = [], [0.0, 250.0, 300.0, 1300.0, 2000.0, 2500.0]
    clock = ModelClock("cuda:1", settle_every=100)
    clock.time(lambda: None)
    clock.time(lambda: None)
    assert _Event.log == ["record"] * 4  # queued, never waited on between calls
    assert clock.seconds == pytest.approx(1.25)        # (250 + 1000) ms
    assert _Event.log[-1] == "synchronize"
    small = ModelClock("cuda:1", settle_every=1)       # a long run settles as it goes
    small.time(lambda: None)
    assert not small._pending and small._seconds == pytest.approx(0.5)


def test_model_timings_use_the_models_device(tiny_preset):
    from fmu.core.model.facemakeup import FaceMakeUp

    model = FaceMakeUp.from_pretrained(*tiny_preset)
    assert model.timings.clock.device == "cpu" and model.timings.model_seconds == 0.0
    calls = []
    model.timings.clock.time = lambda fn, *a, **k: calls.append(fn) or fn(*a, **k)
    import numpy as np

    from fmu.core.model.pipeline import Request, Settings

    rng = np.random.default_rng(0)
    req = Request(prompt="a photo", id_embedding=rng.normal(size=128).astype(np.float32),
                  face_crop=rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), seed=1,
                  condition=np.zeros((64, 64), np.uint8))
    model.generate([req], Settings(steps=2, width=64, height=64))
    assert calls == [model.shading_net, model.unet] * 2  # every UNet / ShadingNet call goes through the clock


def test_synchronize_waits_on_the_devices_own_queue(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("cuda", device)))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append(("mps", None)))
    devices.synchronize("cpu")
    devices.synchronize("cuda:1")
    devices.synchronize("mps")
    assert calls == [("cuda", "cuda:1"), ("mps", None)]
