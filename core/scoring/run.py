"""`fmu score`: every metric over a run's rows, written as scores.parquet, summary.json and
report.html in the run folder.

Flow: rows (inputs) -> decode every output and reference once, in a thread pool ->
per-row status (unreadable output / missing reference are reported, the rest goes on) ->
each metric whose weights are here (FaceSim per face backend, CLIP-T/I, DINO, LPIPS,
Pose/Light) -> FID over the sets -> outputs. A metric that cannot run is reported
unavailable with its reason; nothing crashes the run.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from ..devices import parse_device, parse_devices
from ..errors import UsageError
from ..faces.insightface_backend import find_pack
from ..images import atomic_write_bytes
from ..out_lock import locked_output, remove_stale_temp_files
from ..run_record import read_run_json
from ..shading.controls import CONTROL_COLUMNS
from ..tables import write_table
from .inputs import GATE_COLUMNS, gating_counts, rows_from_images, rows_from_run
from .lpips import find_weights
from .options import ScoreOptions
from .registry import columns, registered
from .report import render_report
from .resume import ScoreState, clear_state, fingerprint
from .rows import ScoreRows, decode_all, image_paths
from .sheet import write_sheet
from .steps import attempt, no_progress
from .summary_table import print_summary
from .units import apply, clear_units, run_units
from .weights import MetricUnavailable, check_given_file, check_given_model

# scores.parquet's type of each kind of per-row column (registry.Column.kind)
KINDS = {"float": pl.Float64, "bool": pl.Boolean, "int": pl.Int64, "floats": pl.List(pl.Float64)}


def check_options(opts: ScoreOptions) -> None:
    """Every model or weights path the user gave exists (UsageError, exit 2): unavailable metrics are
    for weights fmu looked for on its own, not for a path given by hand. The LPIPS folder must hold
    both files; an insightface --face-models folder its pack."""
    if opts.clip_model:
        check_given_model(opts.clip_model, "--clip-model")
    if opts.dino_model:
        check_given_model(opts.dino_model, "--dino-model")
    if opts.fid_weights:
        check_given_file(opts.fid_weights, "--fid-weights")
    if opts.lpips_weights:
        check_given_file(opts.lpips_weights, "--lpips-weights", folder=True)
        try:
            find_weights(opts.lpips_weights)
        except MetricUnavailable as exc:
            raise UsageError(f"--lpips-weights {opts.lpips_weights}: {exc}") from None
    if opts.face_models:
        check_given_file(opts.face_models, "--face-models", folder=True)
        if "insightface" in opts.face_backends:
            find_pack(Path(opts.face_models))


@dataclass
class ScoreResult:
    scores: pl.DataFrame
    summary: dict
    out_dir: Path

    @property
    def all_ok(self) -> bool:
        return self.summary["n_ok"] == self.summary["n_requested"]


def score_rows(rows_df: pl.DataFrame, out_dir: Path, opts: ScoreOptions | None = None,
               console=None, progress=None, engine: Callable | None = None) -> ScoreResult:
    """Score prepared rows (see `inputs`) and write scores.parquet, summary.json, report.html.
    `progress`: a rich Progress shown while the metrics run (None: no bar). `engine`: an engine of
    core/runner/distribute.py (`opts.engine` names it) running the row metrics over units of rows on
    `opts.device`'s devices (None: every metric in this process, one device)."""
    opts = opts or ScoreOptions()
    # checked before any work: a device or precision torch cannot run here is a usage error
    devices = parse_devices(opts.device) if engine is not None else [parse_device(opts.device)]
    opts = replace(opts, device=devices[0] if engine is None else ",".join(devices))
    chosen = [m for m in registered() if m.name in opts.metrics]
    for metric in chosen:
        if metric.check is not None:
            metric.check(replace(opts, device=devices[0]))
    out_dir = Path(out_dir)
    started = time.perf_counter()
    progress_ctx, progress = _make_progress(progress)
    with progress_ctx:
        if engine is None:
            rows, decoded, metrics, timings, resumed = _score_here(rows_df, out_dir, opts, chosen, progress)
        else:
            rows, decoded, metrics, timings, resumed = _score_on_engine(rows_df, out_dir, opts, chosen, engine,
                                                                         devices, progress)
    scores = _scores_frame(rows)
    summary = _summary(rows, metrics, timings, time.perf_counter() - started)
    summary["resumed_metrics"] = resumed
    _write_outputs(out_dir, scores, summary, rows, decoded, opts)
    clear_state(out_dir)
    clear_units(out_dir)
    if console is not None:
        print_summary(console, summary)
    return ScoreResult(scores, summary, out_dir)


def _score_here(rows_df: pl.DataFrame, out_dir: Path, opts: ScoreOptions, chosen: list, progress) -> tuple:
    """Every chosen metric in this process, metric by metric; a score killed part-way resumes after
    its last finished metric."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    decode_task = progress("decode", 1)
    decoded = decode_all(image_paths(rows_df), opts.workers)
    decode_task(1)
    timings["decode_s"] = time.perf_counter() - t
    rows = ScoreRows(rows_df, decoded)
    state = ScoreState.load(out_dir, fingerprint(rows_df, opts))
    state.restore(rows)
    metrics: dict[str, dict] = dict(state.metrics)
    timings.update({k: v for k, v in state.timings.items() if k != "decode_s"})
    steps = [step for metric in chosen for step in metric.steps(opts)]
    resumed = [step.name for step in steps if step.name in state.done]
    for step in steps:
        if step.name not in state.done:
            metrics.update(attempt(step, rows, opts, progress, timings))
            state.save(step.name, metrics, timings, rows)
    return rows, decoded, metrics, timings, resumed


def _score_on_engine(rows_df: pl.DataFrame, out_dir: Path, opts: ScoreOptions, chosen: list, engine: Callable,
                     devices: list[str], progress) -> tuple:
    """The row metrics on the engine's workers, unit by unit (units.py; a re-run reuses finished
    units); then, here, the set metrics (FID) over every row. Images are decoded here only when a
    set metric, the report or the sheet needs them."""
    merged = run_units(rows_df, out_dir, opts, fingerprint(rows_df, opts), engine, devices, progress)
    timings = {**merged.timings, "engine": opts.engine, **merged.counters}
    set_steps = [step for metric in chosen if metric.scope == "set" for step in metric.steps(opts)]
    decoded = {}
    if set_steps or opts.report or opts.sheet:
        t = time.perf_counter()
        decoded = decode_all(image_paths(rows_df), opts.workers)
        timings["decode_s"] = round(time.perf_counter() - t, 3)
    rows = ScoreRows(rows_df, decoded)
    metrics = apply(merged, rows)
    here = replace(opts, device=devices[0])
    for step in set_steps:
        metrics.update(attempt(step, rows, here, progress, timings))
    resumed = ["units"] if merged.counters["units_resumed"] else []
    return rows, decoded, metrics, timings, resumed


def _make_progress(prog):
    """A task factory over the caller's bar; the bar shows while the metrics run (entered here)."""
    if prog is None:
        return contextlib.nullcontext(), no_progress

    def new_task(label, total):
        task_id = prog.add_task(label, total=total)
        return lambda n=1: prog.advance(task_id, n)

    return prog, new_task


def _scores_frame(rows: ScoreRows) -> pl.DataFrame:
    df = rows.df
    data = {
        "id": df["id"], "k": df["k"],
        "status": pl.Series(rows.status, dtype=pl.Utf8),
        "error": pl.Series(["; ".join(e) if e else None for e in rows.errors], dtype=pl.Utf8),
        "image": df["image_path"], "reference": df["reference_path"], "target": df["target_path"],
        "condition": df["condition_path"], "prompt": df["prompt"],
        **{c: df[c] for c in CONTROL_COLUMNS if c in df.columns},
        "layout": df["layout"] if "layout" in df.columns else pl.Series([None] * df.height, dtype=pl.Utf8),
        **{c: df[c] for c in GATE_COLUMNS if c in df.columns},
    }
    kinds = {c.name: c.kind for c in columns()}  # what each metric declared (registry.Column)
    for name, vals in rows.values.items():
        data[name] = pl.Series(vals, dtype=KINDS[kinds.get(name, "float")])
    return pl.DataFrame(data)


def _summary(rows: ScoreRows, metrics: dict, timings: dict, total_s: float) -> dict:
    counts: dict[str, int] = {}
    for s in rows.status:
        counts[s] = counts.get(s, 0) + 1
    failures = [{"id": rows.df["id"][i], "k": int(rows.df["k"][i]), "status": rows.status[i],
                 "error": "; ".join(rows.errors[i])} for i in range(rows.n) if rows.status[i] != "ok"]
    return {
        "n_requested": rows.n,
        "n_ok": counts.get("ok", 0),
        "n_scored_outputs": len(rows.with_output()),
        "status_counts": counts,
        "metrics": metrics,
        "failures": failures,
        "gating": gating_counts(rows.df),
        "timings": {**timings, "total_s": round(total_s, 3),
                    "images_per_s": round(rows.n / total_s, 3) if total_s > 0 else None},
    }


def _write_outputs(out_dir: Path, scores: pl.DataFrame, summary: dict, rows: ScoreRows, decoded: dict,
                   opts: ScoreOptions) -> None:
    write_table(out_dir / "scores.parquet", scores)
    atomic_write_bytes(out_dir / "summary.json", json.dumps(summary, indent=2, default=str).encode())
    if opts.report:
        atomic_write_bytes(out_dir / "report.html", render_report(scores, summary, decoded).encode())
    if opts.sheet:
        write_sheet(out_dir / "sheet.png", scores, decoded)


def score_run(run_dir: Path, opts: ScoreOptions | None = None, console=None,
              backend_from_run: bool = True, progress=None, engine: Callable | None = None) -> ScoreResult:
    """Score `RUN_DIR/results.parquet`. Without explicit backends, the run's own face backend
    (run.json) is used, so a run generated with ArcFace is scored with ArcFace."""
    opts = opts or ScoreOptions()
    info = read_run_json(run_dir)
    if backend_from_run and info.get("face_backend"):
        opts.face_backends = [info["face_backend"]]
        if opts.face_models is None and info.get("face_models"):
            opts.face_models = Path(info["face_models"])
    rows = rows_from_run(run_dir)
    with locked_output(run_dir, "score"):  # not while a generate (or another score) writes there
        remove_stale_temp_files(run_dir)
        return score_rows(rows, Path(run_dir), opts, console, progress, engine)


def score_images(images_dir: Path, manifest: Path, out_dir: Path | None = None,
                 opts: ScoreOptions | None = None, console=None, progress=None,
                 engine: Callable | None = None) -> ScoreResult:
    """Score a folder of `<id>_<k>.png` / `<id>.png` images paired by a manifest; outputs go to
    `out_dir` (default: the images folder)."""
    if out_dir is None:
        out_dir = Path(images_dir)
    if not Path(images_dir).is_dir():
        raise UsageError(f"--images {images_dir} is not a folder")
    rows = rows_from_images(images_dir, manifest)
    with locked_output(out_dir, "score"):
        remove_stale_temp_files(out_dir)
        return score_rows(rows, Path(out_dir), opts, console, progress, engine)
