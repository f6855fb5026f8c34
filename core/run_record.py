"""run.json, the run record every command leaves (generate, prepare, train, finetune): what ran,
with which versions and weights, and how long it took. `fmu score` reads generate's to learn the
run's face backend."""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from .digests import file_digest
from .images import atomic_write_bytes

PACKAGES = ("fmu", "torch", "diffusers", "transformers", "accelerate", "peft", "polars",
            "insightface", "onnxruntime", "onnxruntime-gpu", "dlib-bin", "mediapipe", "numpy")


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def read_run_json(run_dir: Path) -> dict:
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def write_run_record(out: Path, command: str, *, config: dict, summary: dict, timings: dict,
                     **extra) -> dict:
    """run.json of any command: what ran (argv, config), on which versions, how it ended."""
    info = {
        "command": command,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "config": config,
        **extra,
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "summary": summary,
        "timings": timings,
    }
    info = _jsonable(info)
    atomic_write_bytes(Path(out) / "run.json", json.dumps(info, indent=2).encode())
    return info


def write_run_json(out: Path, *, cfg: dict, model_identity: dict, base, adapter, face_identity: dict,
                   summary: dict, timings: dict, validation: list, command: str = "generate") -> dict:
    extra = {
        "model": {**model_identity, "base": str(base), "adapter": str(adapter),
                  "adapter_sha256": file_digest(adapter) if adapter and Path(adapter).is_file() else None},
        "face_backend": face_identity["backend"],
        "face_models": cfg.get("face_models"),
        "face_identity": face_identity,
        "validation_problems": validation,
    }
    if "preset" in model_identity:
        extra["preset"] = model_identity["preset"]
        extra["note"] = "tiny preset: random toy weights, the images are noise by design"
    return write_run_record(out, command, config=cfg, summary=summary, timings=timings, **extra)
