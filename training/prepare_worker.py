"""`fmu prepare`'s worker: one face backend, shading renderer and mask maker per process (dlib is
not thread-safe; each process owns one), run by the same engines as `fmu generate`
(core/runner/distribute.py: inline, processes, ray).

A work unit is a few source rows. The worker analyses each row and writes the unit's results
(report row, train row, face embedding) as one JSON file under `DATA/.units/` before it says the
unit is done, so an engine whose workers live in other processes or on other nodes hands results
back through the shared data folder; the driver merges them and removes the folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from fmu.core.digests import file_digest
from fmu.core.errors import ImageError, RowError
from fmu.core.faces import get_backend
from fmu.core.faces.cache import FaceCache
from fmu.core.images import atomic_write_bytes, load_rgb
from fmu.core.regions import get_parser
from fmu.core.runner.conditions import ConditionProvider

from .data import (
    caption_problem,
    check_token_indices,
    masks_problem,
    parse_masks,
    phrase_occurrence_spans,
    phrase_spans,
)
from .masks import MaskMaker

UNITS_DIR = ".units"  # under the data folder: one JSON file of results per finished unit


def unit_file(out: Path, uid: int) -> Path:
    return Path(out) / UNITS_DIR / f"unit-{uid:07d}.json"


def read_unit(out: Path, uid: int) -> list[dict]:
    """A finished unit's results, each row's embedding back as an array."""
    results = json.loads(unit_file(out, uid).read_text())
    for result in results:
        if result["embedding"] is not None:
            result["embedding"] = np.asarray(result["embedding"], np.float64)
    return results


class PrepareWorker:
    """The engine's worker (run / stats / name, as core.runner.worker.Worker): `make_worker(device)`
    builds one per process; the device is where the face models run (prepare's are CPU models)."""

    def __init__(self, cfg, device: str = "cpu", parser=None):
        self.cfg, self.name = cfg, f"prepare-{device}"
        cache_root = Path(cfg.out) / "cache"
        backend = get_backend(cfg.face_backend, models_dir=cfg.face_models)
        self.faces = FaceCache(cache_root, backend, pick="largest")
        self.shading = ConditionProvider(cache_root, cfg.renderer)
        self.masks = MaskMaker(Path(cfg.out), parser or get_parser(cfg.parser)) if cfg.masks == "auto" else None
        self.analyses, self.seconds = 0, 0.0

    def run(self, work: Iterable[tuple[int, list[dict]]], on_done: Callable) -> None:
        """Prepare each unit's rows, write the unit's results, then `on_done(uid, results)`."""
        for uid, rows in work:
            start = time.perf_counter()
            results = [self.prepare_row(row) for row in rows]
            self.seconds += time.perf_counter() - start
            plain = [{**r, "embedding": None if r.get("embedding") is None
                      else np.asarray(r["embedding"], np.float64).ravel().tolist()} for r in results]
            path = unit_file(self.cfg.out, uid)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, json.dumps(plain).encode())
            on_done(uid, results)

    def stats(self) -> dict:
        return {"analyses": self.analyses, "model_seconds": self.seconds, "face_identity": None}

    def prepare_row(self, row: dict) -> dict:
        """Analyse one image; returns {"report", "train" (None when left out), "embedding"}. Never
        raises RowError: a row's problem is its report's status and reason."""
        cfg, faces, shading, maker = self.cfg, self.faces, self.shading, self.masks
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
            masks = resolve_masks(row, image.shape[:2])
            self.analyses += 1
            analysis = faces.analyse_file(Path(row["image"]), "largest")
            report["num_faces"] = analysis.num_faces
            report["face_box"] = [float(v) for v in analysis.bbox]
            if analysis.num_faces > 1 and cfg.multi_face == "skip":
                raise RowError(f"{analysis.num_faces} faces in the photo (--multi-face skip)", kind="multi_face")
            shading.get(Path(row["image"]), None, cfg.resolution, cfg.resolution)
        except RowError as exc:
            report.update(status="failed", reason=exc.reason, seconds=time.perf_counter() - start)
            return {"report": report, "train": None, "embedding": None}
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


def resolve_masks(row: dict, image_shape: tuple[int, int]) -> list[dict]:
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


