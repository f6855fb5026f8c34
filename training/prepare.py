"""`fmu prepare`: images (a folder or a manifest) -> faces + shading in caches -> train.parquet.

Every image is decoded, its largest face analysed (embedding, crop, box) and its shading
condition rendered; both land in `DATA/cache` under the image's content hash, so re-running
the same command recomputes nothing (resume) and `fmu train` reads them without a detector.
Rows that fail (corrupt image, no face, missing mask, phrase not in the caption) get a status
and a reason in `DATA/results.parquet` and are left out of `DATA/train.parquet`; `DATA/run.json`
records the command, its configuration, versions and counts.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from core.errors import ImageError, RowError, UsageError
from core.images import atomic_write_bytes, load_rgb
from core.runner.runinfo import write_run_record

from .data import MASK_DTYPE, parse_masks, phrase_spans, read_training_manifest

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_CAPTION = "a photo of a person"
REPORT_SCHEMA = {"id": pl.String, "image": pl.String, "status": pl.String, "reason": pl.String,
                 "num_faces": pl.Int64, "seconds": pl.Float64}
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


@dataclass
class PrepareSummary:
    total: int
    ok: int
    failed: int
    seconds: float
    manifest: Path
    report: Path


def source_rows(source: Path) -> list[dict]:
    """Rows {id, image, caption, masks} from a manifest, or from a folder (captions from a
    sidecar `name.txt`, else the default caption; no masks)."""
    source = Path(source)
    if source.is_dir():
        rows = []
        for path in sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            sidecar = path.with_suffix(".txt")
            caption = sidecar.read_text().strip() if sidecar.is_file() else ""
            rows.append({"id": path.stem, "image": str(path.resolve()),
                         "caption": caption or DEFAULT_CAPTION, "masks": []})
        if not rows:
            raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
        return rows
    df = read_training_manifest(source)
    root = source.parent.resolve()
    rows = []
    for i, row in enumerate(df.iter_rows(named=True)):
        image = Path(str(row["image"]))
        rows.append({"id": str(row.get("id") or image.stem or i), "image": str(image if image.is_absolute() else root / image),
                     "caption": row.get("caption") or DEFAULT_CAPTION, "masks": row.get("masks"),
                     "root": str(root)})
    return rows


# One backend / renderer per worker process (dlib is not thread-safe; each process owns one).
_WORKER: dict = {}


def _init_worker(cfg: PrepareConfig) -> None:
    from core.faces import get_backend
    from core.faces.cache import FaceCache
    from core.runner.conditions import ConditionProvider

    cache_root = Path(cfg.out) / "cache"
    backend = get_backend(cfg.face_backend, models_dir=cfg.face_models)
    _WORKER.update(cfg=cfg, faces=FaceCache(cache_root, backend),
                   shading=ConditionProvider(cache_root, cfg.renderer))


def prepare_row(row: dict) -> dict:
    """Analyse one image; returns {"report": ..., "train": ... or None}. Never raises RowError."""
    from core.digests import file_digest

    cfg, faces, shading = _WORKER["cfg"], _WORKER["faces"], _WORKER["shading"]
    start = time.perf_counter()
    report = {"id": row["id"], "image": row["image"], "status": "ok", "reason": None, "num_faces": None}
    try:
        masks = _resolve_masks(row)
        image = load_rgb(row["image"])  # corrupt / missing files fail here with a clear reason
        analysis = faces.analyse_file(Path(row["image"]))
        report["num_faces"] = analysis.num_faces
        shading.get(Path(row["image"]), None, cfg.resolution, cfg.resolution)
    except RowError as exc:
        report.update(status="failed", reason=exc.reason, seconds=time.perf_counter() - start)
        return {"report": report, "train": None}
    digest = file_digest(row["image"])  # the same digest the face cache just used (memoised)
    out = Path(cfg.out)
    train = {"id": row["id"], "image": row["image"], "caption": row["caption"], "masks": masks,
             "image_sha256": digest,
             "face_file": str(faces._path(digest).relative_to(out)),
             "shading_file": str(shading.path(Path(row["image"]), None, cfg.resolution).relative_to(out)),
             "width": image.shape[1], "height": image.shape[0], "num_faces": analysis.num_faces}
    report["seconds"] = time.perf_counter() - start
    return {"report": report, "train": train}


def _resolve_masks(row: dict) -> list[dict]:
    try:
        masks = parse_masks(row.get("masks"))
    except ValueError as exc:
        raise RowError(str(exc), kind="bad_masks") from None
    root = Path(row.get("root") or ".")
    for m in masks:
        path = Path(m["mask"])
        path = path if path.is_absolute() else root / path
        try:
            load_rgb(path)
        except ImageError as exc:
            raise RowError(f"mask {exc}", kind="bad_mask") from None
        m["mask"] = str(path.resolve())
        if m["token_indices"] is None and not phrase_spans(row["caption"], m["phrase"] or ""):
            raise RowError(f"phrase {m['phrase']!r} is not in the caption {row['caption']!r}",
                           kind="phrase_not_in_caption")
    return masks


def _write_parquet(path: Path, df: pl.DataFrame) -> None:
    buf = io.BytesIO()
    df.write_parquet(buf)
    atomic_write_bytes(path, buf.getvalue())


def run_prepare(cfg: PrepareConfig, progress=None) -> PrepareSummary:
    start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = source_rows(Path(cfg.source))
    task = progress.add_task("preparing", total=len(rows)) if progress else None
    results = []
    if cfg.workers > 1:
        with ProcessPoolExecutor(cfg.workers, initializer=_init_worker, initargs=(cfg,)) as pool:
            for result in pool.map(prepare_row, rows, chunksize=4):
                results.append(result)
                if progress:
                    progress.advance(task)
    else:
        _init_worker(cfg)
        for row in rows:
            results.append(prepare_row(row))
            if progress:
                progress.advance(task)
    report = pl.DataFrame([{c: r["report"].get(c) for c in REPORT_SCHEMA} for r in results],
                          schema=REPORT_SCHEMA)
    train = pl.DataFrame([{c: r["train"][c] for c in TRAIN_SCHEMA} for r in results if r["train"]],
                         schema=TRAIN_SCHEMA)
    _write_parquet(out / "results.parquet", report)
    _write_parquet(out / "train.parquet", train)
    ok = train.height
    summary = PrepareSummary(total=len(rows), ok=ok, failed=len(rows) - ok,
                             seconds=time.perf_counter() - start, manifest=out / "train.parquet",
                             report=out / "results.parquet")
    counts = report.group_by("status").len().sort("status")
    write_run_record(out, "prepare", config=asdict(cfg),
                     summary={"total": summary.total, "ok": ok, "failed": summary.failed,
                              "status_counts": dict(zip(counts["status"], counts["len"]))},
                     timings={"wall_seconds": summary.seconds, "workers": cfg.workers})
    return summary
