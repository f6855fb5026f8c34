"""`fmu prepare`: images (a folder or a manifest) -> faces + shading + region masks -> train.parquet.

The paper's four data stages, each cached so that re-running the same command recomputes
nothing (resume): captions for rows without one (`--captioner`, training/captions.py), the
caption's region phrases (training/phrases.py), a mask per phrase from a face parser on the
row's face (`--parser`, core/regions, training/masks.py), and the phrase/mask pairs written in
the `masks` column `fmu train` reads. Every image is decoded, its largest face analysed
(embedding, crop, box; `--multi-face skip` leaves photos of several faces out) and its shading
condition rendered; both land in `DATA/cache` under the image's content hash, so `fmu train` reads
them without a detector. Each photo is kept once (`exclude_duplicates`: identical bytes, or a
near-identical face in the same folder, NEAR_DUPLICATE_COSINE).
Rows that fail (corrupt image, no face, unreadable caption file, missing or mis-sized mask,
bad mask spec, phrase not in the caption) get a status and a reason in `DATA/report.parquet`
and are left out of `DATA/train.parquet`; report.parquet also lists each row's phrases, the
masked ones and why the others have no mask. `DATA/preview.html` shows the masks;
`DATA/run.json` records the command, its configuration, versions and counts.
"""

from __future__ import annotations

import errno
import shutil
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from fmu.core.errors import UsageError, first_line
from fmu.core.faces import embedding_width
from fmu.core.manifest.schema import READ_ERROR, row_ids
from fmu.core.out_lock import locked_output, remove_stale_temp_files
from fmu.core.regions import get_parser
from fmu.core.run_record import write_run_record
from fmu.core.runner.distribute import inline_distributor, pick_merging_engine
from fmu.core.shading.render import resolve_backend
from fmu.core.tables import write_table

from .captions import CaptionCache, Captioner
from .config import MASK_MODES, NEAR_DUPLICATE_COSINE
from .config import PREPARE_DEDUPE as DEDUPE
from .config import PREPARE_MULTI_FACE as MULTI_FACE
from .data import (
    MASK_DTYPE,
    read_training_manifest,
)
from .prepare_worker import UNITS_DIR, PrepareWorker, read_unit
from .preview import write_preview

UNIT_ROWS = 8  # rows per work unit: small enough to balance workers, big enough to amortise a hand-over
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_CAPTION = "a photo of a person"
REPORT_FILE = "report.parquet"  # one row per input: status, reason, phrases (generate's table is results.parquet)
REPORT_SCHEMA = {"id": pl.String, "image": pl.String, "status": pl.String, "reason": pl.String,
                 "num_faces": pl.Int64, "face_box": pl.List(pl.Float64), "seconds": pl.Float64,
                 "caption_source": pl.String,
                 "phrases": pl.List(pl.String), "phrases_masked": pl.List(pl.String),
                 "phrases_unmasked": pl.List(pl.Struct({"phrase": pl.String, "reason": pl.String}))}
TRAIN_SCHEMA = {"id": pl.String, "image": pl.String, "caption": pl.String, "masks": MASK_DTYPE,
                "image_sha256": pl.String, "face_file": pl.String, "shading_file": pl.String,
                "width": pl.Int64, "height": pl.Int64, "num_faces": pl.Int64}


@dataclass
class PrepareConfig:
    source: Path                    # a folder of images or a training manifest (CSV/Parquet)
    out: Path
    face_backend: str = "dlib"      # the tiny preset's; real runs: insightface (ArcFace 512-d)
    face_models: Path | None = None
    resolution: int = 512           # side of the cached shading condition
    renderer: str = "auto"
    workers: int = 1                # worker processes (or Ray actors), each with its own face models
    engine: str | None = None       # inline | processes | ray (core.runner.distribute); None: by --workers
    ray_address: str | None = None  # --engine ray: the cluster (None: auto / a local instance)
    ray_cpus: float = 1.0           # --engine ray: CPUs each actor reserves
    masks: str = "auto"             # auto: + masks from --parser for the caption's phrases | given
    parser: str = "mesh"            # mesh | segformer:<folder or hub id>   (core.regions)
    captioner: str | None = None    # image-to-text model for rows without a caption
    multi_face: str = "largest"     # one of MULTI_FACE
    dedupe: str = "near"            # one of DEDUPE


@dataclass
class PrepareSummary:
    total: int
    ok: int
    failed: int
    seconds: float
    manifest: Path
    report: Path
    phrases: int = 0          # caption phrases found in the usable rows
    phrases_masked: int = 0   # ... with a mask (auto or given)


def source_rows(source: Path) -> list[dict]:
    """Rows {id, image, caption, masks} from a manifest, or from a folder (captions from a
    sidecar `name.txt`, else the default caption; no masks)."""
    source = Path(source)
    if source.is_dir():
        rows = []
        # the folder itself, not its subfolders: a link into another folder is never walked
        for path in sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            image, problem = _followed(path)
            caption, caption_problem = _sidecar_caption(path.with_suffix(".txt"))
            rows.append({"id": path.stem, "image": image, "caption": caption or DEFAULT_CAPTION,
                         "caption_source": "sidecar" if caption else "default", "masks": [],
                         "problem": problem or (("bad_caption", caption_problem) if caption_problem else None)})
        if not rows:
            raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
        return rows
    df = read_training_manifest(source)
    root = source.parent.resolve()
    stems = pl.Series([Path(str(v)).stem if v is not None else None for v in df["image"]], dtype=pl.String)
    ids = row_ids(df["id"] if "id" in df.columns else None, df.height, fallback=stems)
    rows = []
    for i, row in enumerate(df.iter_rows(named=True)):
        image = Path(str(row["image"]))
        rows.append({"id": ids[i],
                     "image": str(image if image.is_absolute() else root / image),
                     "caption": row.get("caption") or DEFAULT_CAPTION,
                     "caption_source": "manifest" if row.get("caption") else "default",
                     "masks": row.get("masks"), "root": str(root),
                     # a record the CSV reader could not read ("kind: line N: what") fails its row only
                     "problem": (row[READ_ERROR].split(":", 1)[0], row[READ_ERROR]) if row.get(READ_ERROR) else None})
    return rows


def _followed(path: Path) -> tuple[str, tuple[str, str] | None]:
    """(the file a folder entry names, or the entry itself with (kind, why) when it names none): a
    symlink loop or a dangling link fails its row instead of the run."""
    try:
        return str(path.resolve(strict=True)), None
    except RuntimeError:  # Python < 3.13 reports a symlink loop so
        return str(path.absolute()), ("not_a_file", f"{path.name} is a symlink loop")
    except OSError as exc:  # ELOOP on newer Pythons, ENOENT for a dangling link
        why = "a symlink loop" if exc.errno == errno.ELOOP else f"a link to nothing ({exc.strerror})"
        return str(path.absolute()), ("not_a_file", f"{path.name} is {why}")


def _sidecar_caption(sidecar: Path) -> tuple[str, str | None]:
    """(caption, None), or ("", why) when the sidecar cannot be read: that row fails, not the run."""
    if not sidecar.is_file():
        return "", None
    try:
        return sidecar.read_text(encoding="utf-8").strip(), None
    except UnicodeDecodeError:
        return "", f"caption file {sidecar.name} is not UTF-8 text"
    except OSError as exc:
        return "", f"cannot read caption file {sidecar.name}: {exc.strerror or exc}"


def exclude_duplicates(results: list[dict], mode: str = "near") -> int:
    """Keep each photo once: a usable row whose file holds the same bytes as an earlier row's other
    file (sha256), or whose face embedding has a cosine above NEAR_DUPLICATE_COSINE with an earlier
    row's of the same identity folder, is excluded with reason `duplicate_of: ID (...)`. Rows naming
    the same file (a manifest giving one photo several captions or masks) are not duplicates.
    `mode` exact checks bytes only, off nothing. Returns how many were excluded."""
    if mode == "off":
        return 0
    by_digest: dict[str, tuple[str, str]] = {}                # sha256 -> (id, file) of the row kept
    kept: dict[str, list[tuple[str, str, np.ndarray]]] = {}   # identity folder -> (id, file, unit embedding)
    excluded = 0
    for result in results:
        train = result["train"]
        if train is None:
            continue
        path = str(Path(train["image"]).resolve())
        folder = str(Path(path).parent)
        emb = np.asarray(result["embedding"], np.float64).ravel()
        emb = emb / (np.linalg.norm(emb) or 1.0)
        why = None
        first = by_digest.get(train["image_sha256"])
        if first is not None and first[1] != path:
            why = f"duplicate_of: {first[0]} (identical bytes)"
        for other, other_path, other_emb in kept.get(folder, []) if why is None and mode == "near" else []:
            cosine = float(emb @ other_emb)
            if other_path != path and cosine > NEAR_DUPLICATE_COSINE:
                why = f"duplicate_of: {other} (face embedding cosine {cosine:.3f} > {NEAR_DUPLICATE_COSINE})"
                break
        if why is not None:
            result["report"].update(status="excluded", reason=why)
            result["train"] = None
            excluded += 1
            continue
        by_digest.setdefault(train["image_sha256"], (train["id"], path))
        kept.setdefault(folder, []).append((train["id"], path, emb))
    return excluded


def _check_options(cfg: PrepareConfig):
    """Usage errors before any row is touched or --out is created: the mask mode, the renderer,
    the face backend (its library and model files), and a parser that loads (returned; a broken
    model folder is one usage error here, not one per worker)."""
    if cfg.multi_face not in MULTI_FACE:
        raise UsageError(f"--multi-face {cfg.multi_face!r}: use one of {', '.join(MULTI_FACE)}")
    if cfg.dedupe not in DEDUPE:
        raise UsageError(f"--dedupe {cfg.dedupe!r}: use one of {', '.join(DEDUPE)}")
    if cfg.masks not in MASK_MODES:
        raise UsageError(f"--masks {cfg.masks!r}: use one of {', '.join(MASK_MODES)}")
    try:
        resolve_backend(cfg.renderer)
    except (RuntimeError, ValueError) as exc:  # pytorch3d asked for and not installed
        raise UsageError(f"--renderer {cfg.renderer}: {first_line(exc)}") from None
    embedding_width(cfg.face_backend, Path(cfg.face_models) if cfg.face_models else None)
    return get_parser(cfg.parser) if cfg.masks == "auto" else None


def run_prepare(cfg: PrepareConfig, progress=None) -> PrepareSummary:
    start = time.perf_counter()
    parser = _check_options(cfg)
    engine = _pick_engine(cfg)
    out = Path(cfg.out)
    rows = source_rows(Path(cfg.source))
    captioner = Captioner(cfg.captioner) if cfg.captioner else None
    with locked_output(out, "prepare"):  # one run per data folder; a killed run's temp files go
        remove_stale_temp_files(out)
        return _prepare(cfg, rows, (engine, parser), captioner, progress, start)


def engine_name(cfg: PrepareConfig) -> str:
    """`--engine`, or by default inline for one worker and processes for several."""
    return cfg.engine or ("processes" if cfg.workers > 1 else "inline")


def _pick_engine(cfg: PrepareConfig):
    """The engine (core.runner.distribute) for `--engine` (default: inline for one worker, processes
    for several); a usage error before any row is read (torchrun among them: one prepare run merges
    every row)."""
    return pick_merging_engine(engine_name(cfg), "fmu prepare", ["cpu"] * cfg.workers,
                               ray_address=cfg.ray_address, ray_cpus=cfg.ray_cpus)


def _prepare(cfg: PrepareConfig, rows: list[dict], run_with: tuple, captioner, progress,
             start: float) -> PrepareSummary:
    out = Path(cfg.out)
    if captioner is not None:  # stage 1, batched in this process before the rows are shared out
        CaptionCache(out / "cache", captioner).fill(rows, progress)
    results, counters = _run_units(cfg, rows, *run_with, progress)
    exclude_duplicates(results, cfg.dedupe)
    report = pl.DataFrame([{c: r["report"].get(c) for c in REPORT_SCHEMA} for r in results],
                          schema=REPORT_SCHEMA)
    train = pl.DataFrame([{c: r["train"][c] for c in TRAIN_SCHEMA} for r in results if r["train"]],
                         schema=TRAIN_SCHEMA)
    write_table(out / REPORT_FILE, report)
    write_table(out / "train.parquet", train)
    write_preview(out, train.to_dicts(), report.to_dicts(), cfg.parser if cfg.masks == "auto" else None)
    ok = train.height
    phrase_counts = _phrase_counts(report)
    summary = PrepareSummary(total=len(rows), ok=ok, failed=len(rows) - ok,
                             seconds=time.perf_counter() - start, manifest=out / "train.parquet",
                             report=out / REPORT_FILE, phrases=phrase_counts["phrases"],
                             phrases_masked=phrase_counts["phrases_masked"])
    counts = report.group_by("status").len().sort("status")
    write_run_record(out, "prepare", config=asdict(cfg),
                     summary={"total": summary.total, "ok": ok, "failed": summary.failed,
                              "status_counts": dict(zip(counts["status"], counts["len"])),
                              **phrase_counts},
                     timings={"wall_seconds": summary.seconds, "workers": cfg.workers,
                              "engine": engine_name(cfg), **counters},
                     made=ok)
    return summary


def _run_units(cfg: PrepareConfig, rows: list[dict], engine, parser, progress) -> tuple[list[dict], dict]:
    """Every row's result, in row order, and the engine's counters: the rows in units of up to
    UNIT_ROWS on the engine, each unit's results read back from the file its worker wrote; the rows
    of a unit no worker could finish fail with the engine's reason."""
    out = Path(cfg.out)
    shutil.rmtree(out / UNITS_DIR, ignore_errors=True)  # a killed run's units: the caches make redoing cheap
    size = max(1, min(UNIT_ROWS, len(rows) // (4 * cfg.workers)))  # a small job still spreads over the workers
    units = [rows[i:i + size] for i in range(0, len(rows), size)]
    # the driver's parser is handed to an in-process worker; worker processes load their own
    make_worker = partial(PrepareWorker, cfg, parser=parser if engine is inline_distributor else None)
    task = progress.add_task("preparing", total=len(rows)) if progress else None
    done: dict[int, list[dict]] = {}

    def on_done(uid: int, error: str | None) -> None:
        done[uid] = read_unit(out, uid) if error is None else [_failed(row, error) for row in units[uid]]
        if progress:
            progress.advance(task, len(units[uid]))

    counters = engine(units, make_worker, ["cpu"] * cfg.workers, on_done)
    shutil.rmtree(out / UNITS_DIR, ignore_errors=True)
    results = [result for uid in range(len(units)) for result in done.get(uid) or
               [_failed(row, "worker_died: no result for this row") for row in units[uid]]]
    return results, {"units": len(units), "engine_workers": counters.get("workers")}


def _failed(row: dict, why: str) -> dict:
    """A row no worker finished (`why`: `kind: message`, like every row's reason)."""
    return {"report": {"id": row["id"], "image": row["image"], "status": "failed", "reason": why,
                       "caption_source": row.get("caption_source")}, "train": None, "embedding": None}


def _phrase_counts(report: pl.DataFrame) -> dict:
    """Totals over the usable rows for run.json: phrases found, masked, and why not (by kind)."""
    ok = report.filter(pl.col("status") == "ok")
    unmasked = [item["reason"].split(":", 1)[0] for cell in ok["phrases_unmasked"].to_list() for item in cell or []]
    return {"phrases": int(ok["phrases"].list.len().sum() or 0),
            "phrases_masked": int(ok["phrases_masked"].list.len().sum() or 0),
            "phrases_unmasked_by_reason": {k: unmasked.count(k) for k in sorted(set(unmasked))}}
