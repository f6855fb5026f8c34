"""`fmu score` on an engine (`--engine processes|ray`): the rows in units, each unit scored by a
ScoreWorker (score_worker.py) on the engine the caller picked (core/runner/distribute.py; handed in
as a callable, the engines live a layer above), the units' results merged into one set of rows.

Rows sharing a reference are kept together (its embeddings are computed once per unit). Units whose
file a previous run of the same rows and options left are not run again. A unit no worker could
finish fails its rows with the engine's reason; the other units' rows are scored.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import polars as pl

from .registry import registered
from .rows import ScoreRows
from .score_worker import UNITS_DIR, ScoreWorker, read_unit

UNIT_ROWS = 64  # rows per unit at most; a small job is cut finer so that every worker gets some


@dataclass
class Merged:
    """The units' results over every row, and what the engine did."""

    status: list[str]
    errors: list[list[str]]
    values: dict[str, list] = field(default_factory=dict)
    parts: dict[str, list[dict]] = field(default_factory=dict)   # summary key -> the units' entries
    timings: dict[str, float] = field(default_factory=dict)      # step -> seconds summed over units
    counters: dict = field(default_factory=dict)


def plan_units(rows_df: pl.DataFrame, workers: int) -> list[tuple[list[int], pl.DataFrame]]:
    """(row indices, their rows) per unit: rows ordered by reference so a reference's rows share
    a unit, at most UNIT_ROWS each and about four units per worker for a small job."""
    refs = rows_df["reference_path"].to_list()
    order = sorted(range(rows_df.height), key=lambda i: (refs[i] or "", i))
    size = max(1, min(UNIT_ROWS, -(-rows_df.height // (4 * max(1, workers)))))
    chunks = [order[i:i + size] for i in range(0, len(order), size)]
    return [(idx, rows_df[idx]) for idx in chunks]


def run_units(rows_df: pl.DataFrame, out_dir: Path, opts, key: str, engine: Callable, devices: list[str],
              progress) -> Merged:
    """Score the rows' units on `engine` (engine(units, make_worker, devices, on_done) -> counters),
    reusing the units a previous run of the same `key` finished; merged in row order."""
    units = plan_units(rows_df, len(devices))
    found = {uid: read_unit(out_dir, uid, key, idx) for uid, (idx, _) in enumerate(units)}
    done = {uid: data for uid, data in found.items() if data is not None}
    todo = [uid for uid in range(len(units)) if uid not in done]
    failed: dict[int, str] = {}
    task = progress("scoring units", rows_df.height)
    task(sum(len(units[uid][0]) for uid in done))

    def on_done(j: int, error: str | None) -> None:
        uid = todo[j]
        data = read_unit(out_dir, uid, key, units[uid][0]) if error is None else None
        if data is None:
            failed[uid] = error or "worker_died: the unit's results file is missing"
        else:
            done[uid] = data
        task(len(units[uid][0]))

    counters = {"workers": 0}
    if todo:
        make_worker = partial(ScoreWorker, opts, out_dir, key)
        counters = engine([(uid, *units[uid]) for uid in todo], make_worker, devices, on_done)
    merged = _merge(rows_df, units, done, failed)
    merged.counters = {"units": len(units), "units_resumed": len(units) - len(todo),
                       "engine_workers": counters.get("workers")}
    return merged


def _merge(rows_df: pl.DataFrame, units: list, done: dict[int, dict], failed: dict[int, str]) -> Merged:
    n = rows_df.height
    merged = Merged(status=list(rows_df["gen_status"]), errors=[[] for _ in range(n)])
    for uid, (indices, _) in enumerate(units):
        data = done.get(uid)
        if data is None:
            for i in indices:
                merged.status[i] = "failed"
                merged.errors[i] = [failed.get(uid, "worker_died: no result for this row")]
            continue
        for j, i in enumerate(indices):
            merged.status[i], merged.errors[i] = data["status"][j], data["errors"][j]
        for name, values in data["values"].items():
            column = merged.values.setdefault(name, [None] * n)
            for j, i in enumerate(indices):
                column[i] = values[j]
        for key, entry in data["metrics"].items():
            merged.parts.setdefault(key, []).append(entry)
        for step, seconds in data["timings"].items():
            merged.timings[step] = round(merged.timings.get(step, 0.0) + seconds, 3)
    return merged


def apply(merged: Merged, rows: ScoreRows) -> dict[str, dict]:
    """Put the merged row states into `rows` and return the summary entries of the row metrics."""
    rows.status, rows.errors, rows.values = merged.status, merged.errors, merged.values
    owners = {key: m for m in registered() for key in m.keys}
    return {key: owners[key].merged(key, parts, rows) if key in owners else parts[0]
            for key, parts in merged.parts.items()}


def clear_units(out_dir: Path) -> None:
    """Remove the unit files once the final tables are written."""
    shutil.rmtree(Path(out_dir) / UNITS_DIR, ignore_errors=True)

