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
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from fmu.core.digests import file_digest
from fmu.core.errors import ImageError, RowError, UsageError, first_line
from fmu.core.faces import embedding_width, get_backend
from fmu.core.faces.cache import FaceCache
from fmu.core.images import load_rgb
from fmu.core.manifest.schema import READ_ERROR
from fmu.core.out_lock import locked_output, remove_stale_temp_files
from fmu.core.regions import get_parser
from fmu.core.run_record import write_run_record
from fmu.core.runner.conditions import ConditionProvider
from fmu.core.shading.render import resolve_backend
from fmu.core.tables import write_table

from .captions import CaptionCache, Captioner
from .config import MASK_MODES, NEAR_DUPLICATE_COSINE
from .config import PREPARE_DEDUPE as DEDUPE
from .config import PREPARE_MULTI_FACE as MULTI_FACE
from .data import (
    MASK_DTYPE,
    caption_problem,
    check_token_indices,
    masks_problem,
    parse_masks,
    phrase_occurrence_spans,
    phrase_spans,
    read_training_manifest,
)
from .masks import MaskMaker
from .preview import write_preview

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
    workers: int = 1
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
    rows = []
    for i, row in enumerate(df.iter_rows(named=True)):
        image = Path(str(row["image"]))
        rows.append({"id": str(row.get("id") or image.stem or i),
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


# One backend / renderer per worker process (dlib is not thread-safe; each process owns one).
_WORKER: dict = {}


def _init_worker(cfg: PrepareConfig, parser=None) -> None:
    cache_root = Path(cfg.out) / "cache"
    backend = get_backend(cfg.face_backend, models_dir=cfg.face_models)
    _WORKER.update(cfg=cfg, faces=FaceCache(cache_root, backend, pick="largest"),
                   shading=ConditionProvider(cache_root, cfg.renderer),
                   masks=MaskMaker(Path(cfg.out), parser or get_parser(cfg.parser)) if cfg.masks == "auto" else None)


def prepare_row(row: dict) -> dict:
    """Analyse one image; returns {"report": ..., "train": ... or None}. Never raises RowError."""
    cfg, faces, shading, maker = _WORKER["cfg"], _WORKER["faces"], _WORKER["shading"], _WORKER["masks"]
    start = time.perf_counter()
    report = {"id": row["id"], "image": row["image"], "status": "ok", "reason": None, "num_faces": None,
              "caption_source": row.get("caption_source")}
    try:
        if row.get("problem"):
            kind, why = row["problem"]
            raise RowError(why, kind=kind)
        if too_long := caption_problem(row["caption"]):  # before any phrase or mask is looked at
            raise RowError(too_long.split(": ", 1)[1], kind="caption_too_long")
        image = load_rgb(row["image"])  # corrupt / missing files fail here with a clear reason
        masks = _resolve_masks(row, image.shape[:2])
        analysis = faces.analyse_file(Path(row["image"]), "largest")
        report["num_faces"] = analysis.num_faces
        report["face_box"] = [float(v) for v in analysis.bbox]
        if analysis.num_faces > 1 and cfg.multi_face == "skip":
            raise RowError(f"{analysis.num_faces} faces in the photo (--multi-face skip)", kind="multi_face")
        shading.get(Path(row["image"]), None, cfg.resolution, cfg.resolution)
    except RowError as exc:
        report.update(status="failed", reason=exc.reason, seconds=time.perf_counter() - start)
        return {"report": report, "train": None}
    digest = file_digest(row["image"])  # the same digest the face cache just used (memoised)
    if maker is not None:  # stages 2-4: phrases -> region masks -> (phrase, mask) pairs
        auto = maker.row_masks(image, digest, analysis.bbox, row["caption"], masks)
        masks = masks + auto.entries
        report.update(phrases=auto.phrases, phrases_masked=auto.masked, phrases_unmasked=auto.unmasked)
    out = Path(cfg.out)
    train = {"id": row["id"], "image": row["image"], "caption": row["caption"], "masks": masks,
             "image_sha256": digest,
             "face_file": str(faces.path(digest).relative_to(out)),
             "shading_file": str(shading.path(Path(row["image"]), None, cfg.resolution).relative_to(out)),
             "width": image.shape[1], "height": image.shape[0], "num_faces": analysis.num_faces}
    report["seconds"] = time.perf_counter() - start
    return {"report": report, "train": train, "embedding": analysis.embedding}


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


def _resolve_masks(row: dict, image_shape: tuple[int, int]) -> list[dict]:
    """The row's masks, checked as training will use them: types, phrase occurrences (the spans
    `phrase_token_indices` maps), explicit token positions, and mask files the image's size."""
    try:
        masks = parse_masks(row.get("masks"))
    except ValueError as exc:
        raise RowError(str(exc), kind="bad_masks") from None
    if too_many := masks_problem(len(masks)):
        raise RowError(too_many.split(": ", 1)[1], kind="too_many_masks")
    root = Path(row.get("root") or ".")
    for m in masks:
        path = Path(m["mask"])
        path = path if path.is_absolute() else root / path
        try:
            mask = load_rgb(path)
        except ImageError as exc:
            raise RowError(f"mask {exc}", kind="bad_mask") from None
        if mask.shape[:2] != tuple(image_shape):
            # training squares image and mask alike: only the same size keeps them aligned
            raise RowError(f"mask {path.name} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                           f"{image_shape[1]}x{image_shape[0]}", kind="bad_mask")
        m["mask"] = str(path.resolve())
        _check_tokens(row["caption"], m, path.name)
    return masks


def _check_tokens(caption: str, mask: dict, name: str) -> None:
    """What training will map to tokens exists: the phrase (and its occurrence), or the explicit
    positions within the caption's 77 tokens."""
    if mask["token_indices"] is None and not phrase_spans(caption, mask["phrase"] or ""):
        raise RowError(f"phrase {mask['phrase']!r} is not in the caption {caption!r}",
                       kind="phrase_not_in_caption")
    try:
        if mask["token_indices"] is None:
            phrase_occurrence_spans(caption, mask["phrase"], mask["occurrence"])
        else:
            check_token_indices(mask["token_indices"])
    except ValueError as exc:
        raise RowError(f"mask {name}: {exc}", kind="bad_masks") from None


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
    out = Path(cfg.out)
    rows = source_rows(Path(cfg.source))
    captioner = Captioner(cfg.captioner) if cfg.captioner else None
    with locked_output(out, "prepare"):  # one run per data folder; a killed run's temp files go
        remove_stale_temp_files(out)
        return _prepare(cfg, rows, parser, captioner, progress, start)


def _prepare(cfg: PrepareConfig, rows: list[dict], parser, captioner, progress, start: float) -> PrepareSummary:
    out = Path(cfg.out)
    if captioner is not None:  # stage 1, batched in this process before the rows are shared out
        CaptionCache(out / "cache", captioner).fill(rows, progress)
    task = progress.add_task("preparing", total=len(rows)) if progress else None
    results = []
    if cfg.workers > 1:
        # spawned, not forked: this process may already run model threads (mediapipe graphs, torch)
        # that a forked child would inherit half-alive and deadlock on
        with ProcessPoolExecutor(cfg.workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(cfg,)) as pool:
            for result in pool.map(prepare_row, rows, chunksize=4):
                results.append(result)
                if progress:
                    progress.advance(task)
    else:
        _init_worker(cfg, parser)
        for row in rows:
            results.append(prepare_row(row))
            if progress:
                progress.advance(task)
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
                     timings={"wall_seconds": summary.seconds, "workers": cfg.workers}, made=ok)
    return summary


def _phrase_counts(report: pl.DataFrame) -> dict:
    """Totals over the usable rows for run.json: phrases found, masked, and why not (by kind)."""
    ok = report.filter(pl.col("status") == "ok")
    unmasked = [item["reason"].split(":", 1)[0] for cell in ok["phrases_unmasked"].to_list() for item in cell or []]
    return {"phrases": int(ok["phrases"].list.len().sum() or 0),
            "phrases_masked": int(ok["phrases_masked"].list.len().sum() or 0),
            "phrases_unmasked_by_reason": {k: unmasked.count(k) for k in sorted(set(unmasked))}}
