"""Torch devices: what `--devices` means, what torch reports, and model timings that are true on
an accelerator.

- `parse_devices(spec)`: `auto`, `cpu`, `cuda`, `cuda:N`, `mps`, `xpu`, `xpu:N` or a comma list of
  them, each checked against what torch reports (a UsageError names it otherwise). `auto` takes
  every device of the first accelerator torch reports, in the order cuda, xpu, mps; else the CPU.
- `accelerators()`: each accelerator kind, usable or not, with torch's own answer (`fmu doctor`).
- `synchronize(device)` and `ModelClock`: an accelerator runs kernels asynchronously, so a wall
  clock read around a call measures the launch, not the work. The clock times calls with device
  events (no stall between calls) and settles them when read.
- `face_device(device)`: where the ONNX face models run for a torch device (onnxruntime's standard
  wheels know CUDA and CPU only).

torch is imported inside the functions (deferred): fmu's option checks and `fmu --help` import this
module without waiting for it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from .errors import UsageError

ACCELERATORS = ("cuda", "xpu", "mps")   # `auto` looks in this order
SPELLING = "auto, cpu, cuda, cuda:N, mps, xpu, xpu:N or a comma list such as cuda:0,cuda:1"
_DEVICE = re.compile(r"^(cpu|cuda|xpu|mps)(?::(\d+))?$")


@dataclass
class Accelerator:
    kind: str                 # cuda | xpu | mps
    count: int                # devices torch sees (0: not usable)
    names: list[str]
    reason: str               # what torch reports when count is 0; a summary otherwise

    @property
    def usable(self) -> bool:
        return self.count > 0


def _backend_module(kind: str):
    import torch  # deferred: torch is heavy and only needed once a device is checked

    return getattr(torch, kind, None)


def accelerator(kind: str) -> Accelerator:
    """What torch reports about one accelerator kind: how many devices, their names, and why
    none is usable when none is."""
    import torch  # deferred: as above

    if kind == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            return Accelerator(kind, 0, [], "this torch is a CPU build (torch.version.cuda is None)")
        if not torch.cuda.is_available():
            return Accelerator(kind, 0, [], "torch.cuda.is_available() is False (no GPU visible: check the "
                                            "driver and CUDA_VISIBLE_DEVICES)")
        n = torch.cuda.device_count()
        names = [torch.cuda.get_device_name(i) for i in range(n)]
        return Accelerator(kind, n, names, f"CUDA {torch.version.cuda or torch.version.hip}")
    if kind == "xpu":
        xpu = _backend_module("xpu")
        if xpu is None or not xpu._is_compiled():
            return Accelerator(kind, 0, [], "this torch has no XPU support (torch.xpu._is_compiled() is False)")
        if not xpu.is_available():
            return Accelerator(kind, 0, [], "torch.xpu.is_available() is False (no Intel GPU visible)")
        n = xpu.device_count()
        return Accelerator(kind, n, [xpu.get_device_name(i) for i in range(n)], "Intel XPU")
    if kind == "mps":
        mps = torch.backends.mps
        if not mps.is_available():
            why = ("this torch is not built with MPS (torch.backends.mps.is_built() is False; MPS needs a "
                   "macOS build on Apple silicon)" if not mps.is_built() else "MPS needs macOS 12.3+ on Apple silicon")
            return Accelerator(kind, 0, [], f"torch.backends.mps.is_available() is False: {why}")
        return Accelerator(kind, 1, ["Apple MPS"], "Apple Metal")
    raise ValueError(f"not an accelerator kind: {kind!r}")


def accelerators() -> list[Accelerator]:
    return [accelerator(kind) for kind in ACCELERATORS]


def auto_devices() -> list[str]:
    """Every device of the first accelerator torch reports (cuda, xpu, mps), else ["cpu"]."""
    for acc in accelerators():
        if acc.usable:
            return ["mps"] if acc.kind == "mps" else [f"{acc.kind}:{i}" for i in range(acc.count)]
    return ["cpu"]


def check_device(device: str) -> str:
    """One device string, normalised (lower case, no spaces), if torch can use it; else UsageError
    with what torch reports."""
    text = device.strip().lower()
    match = _DEVICE.match(text)
    if match is None:
        raise UsageError(f"unknown device {device.strip()!r}: use {SPELLING}")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index is not None:
            raise UsageError(f"device {text!r}: cpu takes no index (for several CPU workers: cpu,cpu)")
        return text
    acc = accelerator(kind)
    if not acc.usable:
        raise UsageError(f"device {text!r} requested, but {acc.reason}")
    if kind == "mps" and index not in (None, "0"):
        raise UsageError(f"device {text!r}: torch has one MPS device, mps (or mps:0)")
    if index is not None and int(index) >= acc.count:
        raise UsageError(f"device {text!r} requested, but torch sees {acc.count} {kind} device(s) "
                         f"({kind}:0..{kind}:{acc.count - 1})")
    return text


def parse_devices(spec: str) -> list[str]:
    """`--devices`: auto, one device, or a comma list; each entry checked (see `check_device`)."""
    text = (spec or "").strip().lower()
    if text in ("", "auto"):
        return auto_devices()
    entries = [d for d in (e.strip() for e in text.split(",")) if d]
    if not entries:
        raise UsageError(f"--devices {spec!r}: use {SPELLING}")
    return [check_device(d) for d in entries]


def parse_device(spec: str) -> str:
    """A command that runs on one device (`fmu score`): `auto` is the first device auto finds."""
    devices = parse_devices(spec)
    if len(devices) != 1 and (spec or "").strip().lower() not in ("", "auto"):
        raise UsageError(f"device {spec!r}: this command runs on one device, not {len(devices)}")
    return devices[0]


def face_device(device: str) -> str:
    """The device the ONNX face models (onnxruntime) use for a torch device: the same GPU for CUDA,
    the CPU otherwise (onnxruntime's standard wheels have no MPS or XPU provider)."""
    return device if str(device).startswith("cuda") else "cpu"


def device_type(device) -> str:
    return str(device).split(":")[0]


def synchronize(device) -> None:
    """Wait for the work queued on `device` (an accelerator); nothing to wait for on the CPU."""
    kind = device_type(device)
    if kind == "cpu":
        return
    import torch  # deferred: as above

    if kind == "mps":
        torch.mps.synchronize()
    else:
        getattr(torch, kind).synchronize(device)


class ModelClock:
    """Seconds spent inside model calls on one device.

    CPU: the wall clock around each call (the work happens inside it). Accelerators: a pair of
    device events around each call, queued without stalling the host; `seconds` waits for the last
    one and sums the elapsed times, so it reads the device's own time. Pending pairs are settled
    every `settle_every` calls, so a long training run holds no growing list."""

    def __init__(self, device="cpu", settle_every: int = 256):
        self.device = str(device)
        self.settle_every = settle_every
        self._seconds = 0.0
        self._pending: list[tuple] = []

    @property
    def on_device(self) -> bool:
        return device_type(self.device) != "cpu"

    def time(self, fn, *args, **kwargs):
        if not self.on_device:
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self._seconds += time.perf_counter() - start
            return out
        import torch  # deferred: as above

        start, end = (torch.Event(device=self.device, enable_timing=True) for _ in range(2))
        start.record()
        out = fn(*args, **kwargs)
        end.record()
        self._pending.append((start, end))
        if len(self._pending) >= self.settle_every:
            self._settle()
        return out

    def _settle(self) -> None:
        if self._pending:
            self._pending[-1][1].synchronize()
            self._seconds += sum(s.elapsed_time(e) for s, e in self._pending) / 1000.0  # ms -> s
            self._pending.clear()

    @property
    def seconds(self) -> float:
        self._settle()
        return self._seconds
