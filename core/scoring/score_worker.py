"""`fmu score`'s worker on an engine (core/runner/distribute.py: processes, ray): the same
`run(work, on_done)` / `stats()` / `name` as generate's Worker, one per process or Ray actor.

A work unit is a slice of the rows. The worker decodes the unit's images, runs every chosen metric
of scope "row" over them (registry.py), and writes the unit's row states (status, reasons, metric
columns) and summary entries as one JSON file under `OUT/.score_units/` before it says the unit is
done: results travel through the shared output folder, as prepare's do, and a re-run of the same
rows and options (the file's `key`) reuses every unit already written. Models load once per worker
(loaded.py), not once per unit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import polars as pl

from ..images import atomic_write_bytes
from .loaded import keep_models
from .registry import Step, registered
from .rows import ScoreRows, decode_all, image_paths
from .steps import attempt, no_progress

UNITS_DIR = ".score_units"  # under the output folder: one JSON file per finished unit


def unit_file(out: Path, uid: int) -> Path:
    return Path(out) / UNITS_DIR / f"unit-{uid:07d}.json"


def read_unit(out: Path, uid: int, key: str, rows: list[int]) -> dict | None:
    """A finished unit's results, or None when there is none for these rows and options (absent,
    unreadable, or written by a run of other rows / options)."""
    try:
        data = json.loads(unit_file(out, uid).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or data.get("rows") != rows:
        return None
    return data


def row_steps(opts) -> list[Step]:
    """The steps a worker runs: every chosen metric of scope "row" (set-scope ones run in the driver)."""
    return [step for m in registered() if m.name in opts.metrics and m.scope == "row" for step in m.steps(opts)]


class ScoreWorker:
    """Scores units of rows on one device. `key`: the run's fingerprint (resume.py), written into
    each unit's file so a later run knows whose results they are."""

    def __init__(self, opts, out_dir: Path, key: str, device: str = "cpu"):
        keep_models()  # this process is the worker's: its models serve every unit it gets
        self.opts, self.out, self.key = replace(opts, device=device), Path(out_dir), key
        self.name = f"score-{device}"
        self.steps = row_steps(self.opts)
        self.rows_scored, self.seconds = 0, 0.0

    def run(self, work: Iterable[tuple[int, tuple[int, list[int], pl.DataFrame]]], on_done: Callable) -> None:
        """Score each unit, write its file (named by the unit's number in the whole run, `number`:
        an engine numbers only the units it was given), then `on_done(uid, result)`."""
        for uid, (number, indices, df) in work:
            start = time.perf_counter()
            result = {"key": self.key, "rows": indices, **self.score(df)}
            path = unit_file(self.out, number)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, json.dumps(result, default=str).encode())
            self.rows_scored += len(indices)
            self.seconds += time.perf_counter() - start
            on_done(uid, result)

    def score(self, df: pl.DataFrame) -> dict:
        """One unit's row states and summary entries (each step's timings in seconds)."""
        rows = ScoreRows(df, decode_all(image_paths(df), self.opts.workers))
        metrics: dict[str, dict] = {}
        timings: dict[str, float] = {}
        for step in self.steps:
            metrics.update(attempt(step, rows, self.opts, no_progress, timings))
        return {"status": rows.status, "errors": rows.errors, "values": rows.values, "metrics": metrics,
                "timings": timings}

    def stats(self) -> dict:
        return {"analyses": self.rows_scored, "model_seconds": self.seconds, "face_identity": None}
