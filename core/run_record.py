"""run.json, the run record every command leaves (generate, prepare, train, finetune): what ran,
with which versions and weights, and how long it took. `fmu score` reads generate's to learn the
run's face backend.

A folder is often written by several invocations (a resumed generate, `--resume latest` training):
the top-level fields describe the latest one, and `history` keeps every invocation, oldest first
(command, argv, start, end, wall time, what it made, how it ended), so resuming never loses the
first run's timings. An invocation that writes twice (training: "running", then its end) updates
its own entry, found by its start time."""

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


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))


def _invocation(command: str, started: float, now: float, summary: dict, made: int | None) -> dict:
    status = summary.get("status") or ("interrupted" if summary.get("interrupted") else "finished")
    return {"command": command, "argv": list(sys.argv), "started_at": _stamp(started), "finished_at": _stamp(now),
            "wall_seconds": round(now - started, 3), "made": made, "status": status, "start_time": started}


def _history(previous: dict, entry: dict) -> list[dict]:
    """Every invocation so far with `entry` added (or updated, when it is the same invocation)."""
    history = [h for h in previous.get("history") or [] if isinstance(h, dict)]
    if previous and not history and "command" in previous:  # a run.json written before history was kept
        history.append({"command": previous.get("command"), "argv": previous.get("argv"),
                        "started_at": None, "finished_at": previous.get("finished_at"),
                        "wall_seconds": (previous.get("timings") or {}).get("wall_seconds"), "made": None,
                        "status": (previous.get("summary") or {}).get("status", "finished"), "start_time": None})
    if history and history[-1].get("start_time") == entry["start_time"] \
            and history[-1].get("command") == entry["command"]:
        history[-1] = entry
    else:
        history.append(entry)
    return history


def write_run_record(out: Path, command: str, *, config: dict, summary: dict, timings: dict,
                     started: float | None = None, made: int | None = None, **extra) -> dict:
    """run.json of any command: what ran (argv, config), on which versions, how it ended, and the
    history of every invocation that wrote into `out`. `started`: this invocation's start
    (time.time(); default: now less timings' wall_seconds); `made`: images / steps it produced."""
    now = time.time()
    started = now - float(timings.get("wall_seconds") or 0.0) if started is None else started
    history = _history(read_run_json(out), _invocation(command, started, now, summary, made))
    info = {
        "command": command,
        "started_at": _stamp(started),
        "finished_at": _stamp(now),
        "argv": sys.argv,
        "config": config,
        **extra,
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "summary": summary,
        "timings": timings,
        "history": history,
        "totals": {"invocations": len(history),
                   "wall_seconds": round(sum(h.get("wall_seconds") or 0.0 for h in history), 3),
                   "made": sum(h.get("made") or 0 for h in history)},
    }
    info = _jsonable(info)
    atomic_write_bytes(Path(out) / "run.json", json.dumps(info, indent=2).encode())
    return info


def write_run_json(out: Path, *, cfg: dict, model_identity: dict, base, adapter, face_identity: dict,
                   summary: dict, timings: dict, validation: list, command: str = "generate",
                   started: float | None = None, made: int | None = None) -> dict:
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
    return write_run_record(out, command, config=cfg, summary=summary, timings=timings, started=started, made=made,
                            **extra)
