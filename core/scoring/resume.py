"""Resume for `fmu score`: after each metric, the per-row state so far is saved in the output
folder, so a killed or interrupted score re-runs only the metrics it had not finished.

The state is keyed by a fingerprint of the rows, the size and mtime of every image they point at
and the scoring options; anything different starts afresh. The state file is removed once the
final tables are written.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import polars as pl

from ..images import atomic_write_bytes

STATE_NAME = ".score_state.json"
_PATH_COLUMNS = ("image_path", "reference_path", "target_path")
# options that cannot change a value: how much parallelism, where the engine runs, whether a report is drawn
_NEUTRAL_OPTIONS = ("workers", "report", "engine", "ray_address", "ray_cpus")


def _stat(path: str | None) -> list | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def fingerprint(rows_df: pl.DataFrame, opts) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(rows_df.columns).encode())
    for row in rows_df.iter_rows():
        h.update(json.dumps(row, default=str).encode())
    for col in _PATH_COLUMNS:
        if col in rows_df.columns:
            h.update(json.dumps([_stat(p) for p in rows_df[col]]).encode())
    options = {k: v for k, v in asdict(opts).items() if k not in _NEUTRAL_OPTIONS}
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return h.hexdigest()


class ScoreState:
    """Finished metric steps and the row state they left (status, reasons, metric columns)."""

    def __init__(self, out_dir: Path, key: str):
        self.path = Path(out_dir) / STATE_NAME
        self.key = key
        self.done: list[str] = []
        self.metrics: dict = {}
        self.timings: dict = {}
        self.rows: dict | None = None

    @classmethod
    def load(cls, out_dir: Path, key: str) -> ScoreState:
        state = cls(out_dir, key)
        try:
            data = json.loads(state.path.read_text())
        except (OSError, ValueError):
            return state  # none yet, or unreadable: start afresh
        if data.get("key") == key:
            state.done, state.metrics = data["done"], data["metrics"]
            state.timings, state.rows = data["timings"], data["rows"]
        return state

    def save(self, step: str, metrics: dict, timings: dict, rows) -> None:
        self.done.append(step)
        self.metrics, self.timings = metrics, timings
        self.rows = {"status": rows.status, "errors": rows.errors, "values": rows.values}
        payload = {"key": self.key, "done": self.done, "metrics": metrics, "timings": timings,
                   "rows": self.rows}
        try:
            atomic_write_bytes(self.path, json.dumps(payload, default=str).encode())
        except OSError:
            pass  # a lost checkpoint only costs recomputation; the final writes report disk errors

    def restore(self, rows) -> None:
        if self.rows is None:
            return
        rows.status, rows.errors = self.rows["status"], self.rows["errors"]
        rows.values = self.rows["values"]


def clear_state(out_dir: Path) -> None:
    """Remove the state once the final tables are written."""
    (Path(out_dir) / STATE_NAME).unlink(missing_ok=True)
