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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from ..devices import face_device, parse_device
from ..errors import ImageError, RowError, UsageError
from ..faces import get_backend
from ..faces.insightface_backend import find_pack
from ..faces.matching import row_values
from ..images import atomic_write_bytes, load_rgb
from ..manifest.people import label, parse_layout, split_paths
from ..out_lock import locked_output, remove_stale_temp_files
from ..run_record import read_run_json
from ..shading.consistency import ConsistencyScorer
from ..shading.controls import CONTROL_COLUMNS, ControlRequest, requested_fit
from ..shading.light_presets import LightError
from ..shading.mesh import ReconstructorUnavailable
from ..tables import write_table
from . import facesim, people
from .clip_score import ClipScorer, clip_i, clip_t
from .consistency import rmse
from .dino import DinoScorer, dino_similarity
from .face_batch import face_embeddings
from .fid import FidScorer
from .inputs import FRAME_COLUMNS, GATE_COLUMNS, gating_counts, rows_from_images, rows_from_run
from .lpips import LpipsScorer, find_weights
from .report import render_report
from .resume import ScoreState, fingerprint
from .sheet import write_sheet
from .summary_table import print_summary
from .weights import MetricUnavailable, check_given_file, check_given_model

METRICS = ("facesim", "clip", "dino", "lpips", "fid", "consistency")


@dataclass
class ScoreOptions:
    face_backends: list[str] = field(default_factory=lambda: ["dlib"])
    face_models: Path | None = None       # insightface models folder / pack (--face-models, as in generate)
    det_size: int = 640                   # the paper's detector size
    clip_model: str | None = None
    dino_model: str | None = None
    lpips_weights: Path | None = None
    fid_weights: Path | None = None
    metrics: tuple[str, ...] = METRICS
    device: str = "cpu"
    # of the embedding models (CLIP, DINO); LPIPS and FID keep the fp32 their published values come from
    precision: str = "fp32"
    workers: int = 2
    batch_size: int = 16
    report: bool = True
    sheet: bool = False                   # sheet.png, a contact sheet (sheet.py)


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


def _decode_all(paths: list[str], workers: int) -> dict[str, np.ndarray | ImageError]:
    def one(p):
        try:
            return load_rgb(p)
        except ImageError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(zip(paths, pool.map(one, paths)))


class _Rows:
    """Per-row state the metrics fill in: status, reason and metric values."""

    def __init__(self, df: pl.DataFrame, decoded: dict):
        self.df = df
        self.n = df.height
        self.status = list(df["gen_status"])
        self.errors: list[list[str]] = [[e] if e else [] for e in df["gen_error"]]
        self.values: dict[str, list] = {}
        self.out: list[np.ndarray | None] = [None] * self.n
        self.ref: list[np.ndarray | None] = [None] * self.n
        self.people_refs: list[list[np.ndarray] | None] = [None] * self.n  # rows of several people
        for i, r in enumerate(df.iter_rows(named=True)):
            if self.status[i] != "ok":
                if not self.errors[i]:
                    self.errors[i].append(f"generation {self.status[i]}")
                continue
            self.out[i] = self._image(i, decoded, r["image_path"], "output", "image")
            if r.get("layout"):  # several people: a reference each, no one reference for the row
                refs = [self._image(i, decoded, p, label("reference", k), "reference")
                        for k, p in enumerate(split_paths(r["reference_path"]))]
                self.people_refs[i] = refs if all(x is not None for x in refs) else None
                continue
            self.ref[i] = self._image(i, decoded, r["reference_path"], "reference", "reference")

    def _image(self, i: int, decoded: dict, path: str | None, label: str, what: str):
        """The decoded image at `path`, or None after failing row i with the reason."""
        if path is None:
            self.fail(i, f"{label}: no {what} path")
            return None
        image = decoded.get(path)
        if isinstance(image, ImageError):
            self.fail(i, f"{label}: {image.reason}")
            return None
        return image

    def fail(self, i: int, reason: str, status: str = "failed"):
        if status == "failed" or self.status[i] == "ok":
            self.status[i] = status
        self.errors[i].append(reason)

    def column(self, name: str) -> list:
        return self.values.setdefault(name, [None] * self.n)

    def with_output(self) -> list[int]:
        return [i for i in range(self.n) if self.out[i] is not None]

    def with_pair(self) -> list[int]:
        return [i for i in range(self.n) if self.out[i] is not None and self.ref[i] is not None]

    def with_people(self) -> list[int]:
        return [i for i in range(self.n) if self.out[i] is not None and self.people_refs[i] is not None]


def _unique_refs(rows: _Rows, idx: list[int]) -> tuple[list[str], dict[str, np.ndarray]]:
    keys, images = [], {}
    for i in idx:
        key = rows.df["reference_path"][i]
        if key not in images:
            keys.append(key)
            images[key] = rows.ref[i]
    return keys, images


def _score_facesim(rows: _Rows, backend_name: str, opts: ScoreOptions, progress) -> dict:
    col = facesim.column_for(backend_name)
    try:
        backend = get_backend(backend_name, device=face_device(opts.device), models_dir=opts.face_models,
                              det_size=opts.det_size)
    except Exception as exc:  # noqa: BLE001  missing pack, missing onnx files, ...: the metric is unavailable
        raise MetricUnavailable(f"face backend {backend_name!r}: {exc}") from None
    idx = rows.with_pair()
    keys, ref_images = _unique_refs(rows, idx)
    task = progress(f"FaceSim ({backend_name})", len(keys) + len(idx) + len(rows.with_people()))
    # references and outputs in one call: one batch pipeline (and one worker pool) for both
    found = face_embeddings(backend, [ref_images[k] for k in keys] + [rows.out[i] for i in idx],
                            opts.batch_size, opts.workers, task)
    ref_faces, out_faces = dict(zip(keys, found[:len(keys)])), found[len(keys):]
    values, matches, nfaces = rows.column(col), rows.column(f"{col}_match"), rows.column(f"faces_{backend_name}")
    strict_values, found = [], []
    for i, out in zip(idx, out_faces):
        ref = ref_faces[rows.df["reference_path"][i]]
        nfaces[i] = out.num_faces
        if not ref.found:
            rows.fail(i, f"reference: no_face ({backend_name})")
            continue
        if not out.found:
            rows.fail(i, f"output: no_face ({backend_name})", status="no_face")
            matches[i] = False
            strict_values.append(None)
            found.append(False)
            continue
        values[i] = float(backend.similarity(ref.embedding, out.embedding))
        matches[i] = bool(backend.is_match(ref.embedding, out.embedding))
        strict_values.append(values[i])
        found.append(True)
    # several people: faces matched to the references (people.py); the row's value is their mean
    several, ref_faces = rows.with_people(), {}
    if several:
        per_person, worst = rows.column(f"{col}_people"), rows.column(f"{col}_min")
        for i in idx:
            worst[i] = values[i]  # one person: the worst is the one
    for i in several:
        task(1)
        paths = split_paths(rows.df["reference_path"][i])
        for path, image in zip(paths, rows.people_refs[i]):
            if path not in ref_faces:
                ref_faces[path] = backend.best_face(image)
        lost = [label("reference", k) for k, p in enumerate(paths) if not ref_faces[p].found]
        if lost:
            rows.fail(i, f"{', '.join(lost)}: no_face ({backend_name})")
            continue
        who, nfaces[i], matches[i] = people.output_identity(backend, [ref_faces[p].embedding for p in paths],
                                                            rows.out[i])
        row = row_values(who.values, [], [])
        per_person[i], values[i], worst[i] = who.values, row["id_similarity"], row["id_similarity_min"]
        if who.reason:
            rows.fail(i, f"output: {who.reason} ({backend_name})", status="no_face")
        strict_values.append(values[i])
        found.append(who.reason is None)
    stats = facesim.facesim_summary(strict_values, found)
    n_match = sum(1 for i in idx + several if matches[i])
    stats.update(scale=facesim.SCALE.get(backend_name, backend_name), model=backend.identity(),
                 match_rate_strict=(n_match / stats["n"]) if stats["n"] else None)
    if several:
        stats["n_people_rows"] = len(several)
    return stats


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _score_clip(rows: _Rows, opts: ScoreOptions, progress) -> dict:
    scorer = ClipScorer(opts.clip_model, opts.device, opts.batch_size, _dtype(opts))
    idx = rows.with_output()
    pair = [i for i in idx if rows.ref[i] is not None]
    keys, ref_images = _unique_refs(rows, pair)
    task = progress("CLIP", len(idx) + len(keys))
    out_emb = scorer.image_embeddings([rows.out[i] for i in idx])
    txt_emb = scorer.text_embeddings([rows.df["prompt"][i] or "" for i in idx])
    task(len(idx))
    ref_emb = dict(zip(keys, scorer.image_embeddings([ref_images[k] for k in keys])))
    task(len(keys))
    ct, ci = rows.column("clip_t"), rows.column("clip_i")
    for j, i in enumerate(idx):
        ct[i] = float(clip_t(txt_emb[j], out_emb[j]))
        if rows.ref[i] is not None:
            ci[i] = float(clip_i(ref_emb[rows.df["reference_path"][i]], out_emb[j]))
    return {"clip_t": {"model": scorer.source, "mean": _mean(ct), "n": sum(v is not None for v in ct),
                       "scale": "100 x cosine(prompt, output)", "precision": opts.precision},
            "clip_i": {"model": scorer.source, "mean": _mean(ci), "n": sum(v is not None for v in ci),
                       "scale": "cosine(reference, output)", "precision": opts.precision}}


def _score_dino(rows: _Rows, opts: ScoreOptions, progress) -> dict:
    scorer = DinoScorer(opts.dino_model, opts.device, opts.batch_size, _dtype(opts))
    idx = rows.with_pair()
    keys, ref_images = _unique_refs(rows, idx)
    task = progress("DINO", len(idx) + len(keys))
    out_emb = scorer.embeddings([rows.out[i] for i in idx])
    ref_emb = dict(zip(keys, scorer.embeddings([ref_images[k] for k in keys])))
    task(len(idx) + len(keys))
    col = rows.column("dino")
    for j, i in enumerate(idx):
        col[i] = float(dino_similarity(ref_emb[rows.df["reference_path"][i]], out_emb[j]))
    return {"model": scorer.source, "mean": _mean(col), "n": len(idx), "scale": "cosine of CLS features",
            "precision": opts.precision}


def _dtype(opts: ScoreOptions):
    from ..model.load import resolve_dtype  # deferred: torch, only for the metrics that run a torch model

    return resolve_dtype(opts.precision, opts.device)


def _score_lpips(rows: _Rows, opts: ScoreOptions, progress) -> dict:
    scorer = LpipsScorer(opts.lpips_weights, opts.device, max(1, opts.batch_size // 2))
    idx = rows.with_pair()
    task = progress("LPIPS", len(idx))
    vals = scorer.distances([rows.ref[i] for i in idx], [rows.out[i] for i in idx])
    task(len(idx))
    col = rows.column("lpips")
    for j, i in enumerate(idx):
        col[i] = float(vals[j])
    return {"model": scorer.source, "mean": _mean(col), "n": len(idx),
            "scale": "LPIPS v0.1 AlexNet, reference vs output at 256 px (lower is closer)"}


def _score_fid(rows: _Rows, opts: ScoreOptions, progress) -> dict:
    scorer = FidScorer(opts.fid_weights, opts.device, max(1, opts.batch_size // 2))
    idx = rows.with_output()
    keys, ref_images = _unique_refs(rows, [i for i in range(rows.n) if rows.ref[i] is not None])
    task = progress("FID", len(idx) + len(keys))
    value = scorer.fid([rows.out[i] for i in idx], [ref_images[k] for k in keys])
    task(len(idx) + len(keys))
    return {"model": scorer.source, "value": value, "n_outputs": len(idx), "n_references": len(keys),
            "note": "biased upward below 2048 images per set; compare runs of equal sizes"}


def _score_consistency(rows: _Rows, opts: ScoreOptions, progress) -> dict:
    try:
        scorer = ConsistencyScorer()
    except ReconstructorUnavailable as exc:
        raise MetricUnavailable(str(exc)) from None
    idx = rows.with_pair()
    targets = _decode_all(sorted({rows.df["target_path"][i] for i in idx if rows.df["target_path"][i]}),
                          opts.workers)
    several = rows.with_people()  # rows of several people: after the others
    task = progress("Pose/Light", len(idx) + len(several))
    source_fits: dict[str, object] = {}     # references are shared by rows: fit each once

    def fit(key, fn, *args):
        if key not in source_fits:
            try:
                source_fits[key] = fn(*args)
            except RowError as exc:
                source_fits[key] = exc
        return source_fits[key]

    pose, light = rows.column("pose_error_deg"), rows.column("light_error")
    n_no_fit = n_requested = 0
    for i in idx:
        task(1)
        key = rows.df["target_path"][i] or rows.df["reference_path"][i]
        image = targets.get(key) if rows.df["target_path"][i] else rows.ref[i]
        if isinstance(image, ImageError):
            rows.fail(i, f"target: {image.reason}")
            continue
        side = max(rows.out[i].shape[:2])
        box = tuple(rows.df[c][i] for c in FRAME_COLUMNS)
        box = None if None in box else box
        src = fit(("source", key, side, box), scorer.fit_source, image, side, box)
        out = fit(("output", i), scorer.fit, rows.out[i])
        bad = [(who, f) for who, f in (("source", src), ("output", out)) if isinstance(f, RowError)]
        if bad:
            n_no_fit += 1
            rows.errors[i].append("; ".join(f"pose/light {who}: {f.reason}" for who, f in bad))
            continue
        # asked-for pose or light: the output is compared with the request, not with the photo
        request = ControlRequest.from_record(rows.df.row(i, named=True))
        if not request.empty:
            try:
                src = requested_fit(src, request)
            except LightError as exc:
                rows.errors[i].append(f"pose/light request: {exc.kind}: {exc}")
                continue
            n_requested += 1
        pose[i], light[i] = scorer.errors(out, src)
    # several people: each person's box of the output against their own source (people.py)
    people_no_fit, people_requested = _people_consistency(rows, several, scorer, opts, task)
    n_no_fit += people_no_fit
    n_requested += people_requested
    return {"pose_rmse_deg": rmse(pose), "light_rmse": rmse(light), "n": sum(v is not None for v in pose),
            "n_no_fit": n_no_fit, "n_against_request": n_requested,
            "model": f"core.shading ({scorer.reconstructor} reconstruction, SH fit)"}


def _people_consistency(rows: _Rows, several: list[int], scorer, opts: ScoreOptions, task) -> tuple[int, int]:
    """Rows of several people: each person's box of the output against their own source
    (people.py); fills the rows' pose / light columns. (rows without a fit, rows against a request)"""
    n_no_fit = n_requested = 0
    pose, light = rows.column("pose_error_deg"), rows.column("light_error")
    if several:
        per_pose, per_light = rows.column("people_pose_error_deg"), rows.column("people_light_error")
    people_targets = _decode_all(sorted({p for i in several for p in split_paths(rows.df["target_path"][i]) if p}),
                                 opts.workers)
    for i in several:
        task(1)
        refs = rows.people_refs[i]
        targets_i = split_paths(rows.df["target_path"][i]) or [""] * len(refs)
        sources = [people_targets[t] if t else ref for t, ref in zip(targets_i, refs)]
        bad = [f"{label('target', k)}: {s.reason}" for k, s in enumerate(sources) if isinstance(s, ImageError)]
        if bad:
            rows.fail(i, "; ".join(bad))
            continue
        boxes = parse_layout(rows.df["layout"][i], len(refs))
        # each person's frame as generate recorded it (none: centre squares, as for paired images)
        frames = rows.df["people_frames"][i] if "people_frames" in rows.df.columns else None
        request = ControlRequest.from_record(rows.df.row(i, named=True))
        try:  # every person is rendered with the row's pose / light request: compared with it
            per_pose[i], per_light[i], problems = people.output_consistency(
                scorer, sources, frames.to_list() if frames is not None else None, boxes, rows.out[i],
                None if request.empty else (lambda fit, request=request: requested_fit(fit, request)))
        except LightError as exc:
            rows.errors[i].append(f"pose/light request: {exc.kind}: {exc}")
            continue
        n_requested += 0 if request.empty else 1
        row = row_values([], per_pose[i], per_light[i])
        pose[i], light[i] = row["pose_error_deg"], row["light_error"]
        if problems:
            n_no_fit += 1
            rows.errors[i].append("; ".join(problems))
    return n_no_fit, n_requested


def _null_progress(label, total):
    return lambda n=1: None


def score_rows(rows_df: pl.DataFrame, out_dir: Path, opts: ScoreOptions | None = None,
               console=None, progress=None) -> ScoreResult:
    """Score prepared rows (see `inputs`) and write scores.parquet, summary.json, report.html.
    `progress`: a rich Progress shown while the metrics run (None: no bar)."""
    opts = opts or ScoreOptions()
    # checked before any work: a device or precision torch cannot run here is a usage error
    opts = replace(opts, device=parse_device(opts.device))
    if {"clip", "dino"} & set(opts.metrics):
        _dtype(opts)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    progress_ctx, progress = _make_progress(progress)
    with progress_ctx:
        t = time.perf_counter()
        # a row of several people names one reference per person, `|`-separated
        paths = sorted({p for col in ("image_path", "reference_path") for v in rows_df[col] if v
                        for p in split_paths(v) if p})
        decode_task = progress("decode", 1)
        decoded = _decode_all(paths, opts.workers)
        decode_task(1)
        timings["decode_s"] = time.perf_counter() - t
        rows = _Rows(rows_df, decoded)
        # a score killed part-way resumes after its last finished metric
        state = ScoreState.load(out_dir, fingerprint(rows_df, opts))
        state.restore(rows)
        metrics: dict[str, dict] = dict(state.metrics)
        timings.update({k: v for k, v in state.timings.items() if k != "decode_s"})

        def attempt(name: str, fn, *args):
            t0 = time.perf_counter()
            try:
                result = fn(rows, *args, opts, progress)
            except MetricUnavailable as exc:
                return {"available": False, "reason": str(exc)}
            except Exception as exc:  # noqa: BLE001  a broken model file is this metric's problem, not the run's
                return {"available": False, "reason": f"failed: {type(exc).__name__}: {exc}"[:300]}
            finally:
                timings[f"{name}_s"] = round(time.perf_counter() - t0, 3)
            return {"available": True, **result}

        def run_clip():
            res = attempt("clip", _score_clip)
            if res["available"]:
                metrics["clip_t"] = {"available": True, **res["clip_t"]}
                metrics["clip_i"] = {"available": True, **res["clip_i"]}
            else:
                metrics["clip_t"] = metrics["clip_i"] = res

        def run_one(key: str, step: str, fn, *args):
            def go():
                metrics[key] = attempt(step, fn, *args)
            return go

        steps: list[tuple[str, object]] = []
        if "facesim" in opts.metrics:
            steps += [(f"facesim_{b}", run_one(facesim.column_for(b), f"facesim_{b}", _score_facesim, b))
                      for b in opts.face_backends]
        if "clip" in opts.metrics:
            steps.append(("clip", run_clip))
        for name, fn in (("dino", _score_dino), ("lpips", _score_lpips), ("fid", _score_fid),
                         ("consistency", _score_consistency)):
            if name in opts.metrics:
                steps.append((name, run_one("pose_light" if name == "consistency" else name, name, fn)))
        resumed = [step for step, _ in steps if step in state.done]
        for step, run in steps:
            if step not in state.done:
                run()
                state.save(step, metrics, timings, rows)

    scores = _scores_frame(rows)
    summary = _summary(rows, metrics, timings, time.perf_counter() - started)
    summary["resumed_metrics"] = resumed
    _write_outputs(out_dir, scores, summary, rows, decoded, opts)
    state.clear()
    if console is not None:
        print_summary(console, summary)
    return ScoreResult(scores, summary, out_dir)


def _make_progress(prog):
    """A task factory over the caller's bar; the bar shows while the metrics run (entered here)."""
    if prog is None:
        return contextlib.nullcontext(), _null_progress

    def new_task(label, total):
        task_id = prog.add_task(label, total=total)
        return lambda n=1: prog.advance(task_id, n)

    return prog, new_task


def _scores_frame(rows: _Rows) -> pl.DataFrame:
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
    for name, vals in rows.values.items():
        dtype = pl.Boolean if name.endswith("_match") else pl.Int64 if name.startswith("faces_") else pl.Float64
        if name.endswith("_people") or name.startswith("people_"):  # per person, in reference order
            dtype = pl.List(pl.Float64)
        data[name] = pl.Series(vals, dtype=dtype)
    return pl.DataFrame(data)


def _summary(rows: _Rows, metrics: dict, timings: dict, total_s: float) -> dict:
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


def _write_outputs(out_dir: Path, scores: pl.DataFrame, summary: dict, rows: _Rows, decoded: dict,
                   opts: ScoreOptions) -> None:
    write_table(out_dir / "scores.parquet", scores)
    atomic_write_bytes(out_dir / "summary.json", json.dumps(summary, indent=2, default=str).encode())
    if opts.report:
        atomic_write_bytes(out_dir / "report.html", render_report(scores, summary, decoded).encode())
    if opts.sheet:
        write_sheet(out_dir / "sheet.png", scores, decoded)


def score_run(run_dir: Path, opts: ScoreOptions | None = None, console=None,
              backend_from_run: bool = True, progress=None) -> ScoreResult:
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
        return score_rows(rows, Path(run_dir), opts, console, progress)


def score_images(images_dir: Path, manifest: Path, out_dir: Path | None = None,
                 opts: ScoreOptions | None = None, console=None, progress=None) -> ScoreResult:
    """Score a folder of `<id>_<k>.png` / `<id>.png` images paired by a manifest; outputs go to
    `out_dir` (default: the images folder)."""
    if out_dir is None:
        out_dir = Path(images_dir)
    if not Path(images_dir).is_dir():
        raise UsageError(f"--images {images_dir} is not a folder")
    rows = rows_from_images(images_dir, manifest)
    with locked_output(out_dir, "score"):
        remove_stale_temp_files(out_dir)
        return score_rows(rows, Path(out_dir), opts, console, progress)
