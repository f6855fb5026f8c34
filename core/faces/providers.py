"""Which onnxruntime execution providers a device string maps to.

fmu never falls back from CUDA to CPU silently: a run that asked for a GPU and got the CPU
would be ~50x slower with nothing in the logs saying why. `fmu doctor` also reports the
classic broken install where `onnxruntime` and `onnxruntime-gpu` are both present (they
ship the same `onnxruntime` module, so whichever was installed last wins, file by file).
"""

from __future__ import annotations

import importlib.metadata
import re

from ..errors import UsageError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

# Distributions that all install the importable `onnxruntime` package; any two together clash.
ONNXRUNTIME_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-silicon",
)

_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def available_providers() -> list[str]:
    import onnxruntime  # deferred: heavy (onnxruntime)

    return list(onnxruntime.get_available_providers())


def onnx_providers(device: str) -> list:
    """Provider list for `InferenceSession(providers=...)`: "cpu", "cuda" or "cuda:N"."""
    match = _DEVICE.match(device.strip().lower())
    if match is None:
        raise UsageError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index is not None:
            raise UsageError(f"unknown device {device!r}: 'cpu' takes no index")
        return [CPU]
    if CUDA not in available_providers():
        raise UsageError(
            f"CUDA requested ({device}) but onnxruntime has no {CUDA}: "
            "install fmu[gpu] (onnxruntime-gpu) instead of fmu[cpu]"
        )
    return [(CUDA, {"device_id": int(index or 0)}), CPU]


def installed_onnxruntimes() -> dict[str, str]:
    """{distribution name: version} for every onnxruntime flavour installed."""
    found = {}
    for name in ONNXRUNTIME_DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def onnxruntime_clash() -> str | None:
    """A message when more than one onnxruntime flavour is installed, else None."""
    found = installed_onnxruntimes()
    if len(found) < 2:
        return None
    listed = ", ".join(f"{name}=={version}" for name, version in sorted(found.items()))
    return (
        f"several onnxruntime distributions are installed ({listed}); they overwrite each "
        "other's files. Uninstall all of them, then install exactly one "
        "(fmu[cpu] -> onnxruntime, fmu[gpu] -> onnxruntime-gpu)"
    )
