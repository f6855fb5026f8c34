"""What to score: the rows of a run folder, or a folder of images paired by a manifest.

Both forms become one table with absolute paths, so every metric sees the same thing:
`id, k, image_path, reference_path, target_path, condition_path, prompt, gen_status, gen_error`,
`frame_left, frame_top, frame_side` (the square of the shading source an image shows, as
generate recorded it; null for paired images, which are taken to show the centre square), and the
3D controls asked for, `yaw, pitch, roll, expression, light` (null: not asked for).
Rows the generator did not produce keep their status and reason; nothing is dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from ..errors import UsageError, first_line
from ..manifest.people_layout import SEPARATOR, LayoutError, canonical_layout, split_paths
from ..manifest.read import read_manifest as read_generation_manifest
from ..manifest.schema import row_ids
from ..shading.controls import CONTROL_COLUMNS, POSE_ANGLES, is_neutral

ROW_SCHEMA = {
    "id": pl.Utf8, "k": pl.Int64, "image_path": pl.Utf8, "reference_path": pl.Utf8,
    "target_path": pl.Utf8, "condition_path": pl.Utf8, "prompt": pl.Utf8,
    "gen_status": pl.Utf8, "gen_error": pl.Utf8,
    "frame_left": pl.Int64, "frame_top": pl.Int64, "frame_side": pl.Int64,
    "yaw": pl.Float64, "pitch": pl.Float64, "roll": pl.Float64, "expression": pl.Utf8, "light": pl.Utf8,
    # several people (core/manifest/people_layout.py): `|`-joined paths above, the boxes, each person's frame
    "layout": pl.Utf8, "people_frames": pl.List(pl.List(pl.Int64)),
    # quality gating (generate --min-id-sim ...): attempts made, whether the kept one passed, why not
    "attempts": pl.Int64, "accepted": pl.Boolean, "rejection_reason": pl.Utf8,
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
FRAME_COLUMNS = ("frame_left", "frame_top", "frame_side")
GATE_COLUMNS = ("attempts", "accepted", "rejection_reason")
MEASURED = re.compile(r" -?[0-9.]+(?= [<>])")  # the value in "id_similarity 0.412 < 0.5"


def _abs(base: Path, value) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else (base / path))


def rows_from_run(run_dir: Path) -> pl.DataFrame:
    """Rows of `RUN_DIR/results.parquet`, image/condition paths made absolute."""
    run_dir = Path(run_dir)
    results = run_dir / "results.parquet"
    if not results.is_file():
        raise UsageError(f"{run_dir}: no results.parquet (is this a folder written by `fmu generate`?)")
    try:
        df = pl.read_parquet(results)
    except Exception as exc:  # noqa: BLE001  polars raises several types for a damaged file
        raise UsageError(f"{results} is not a readable Parquet table: {first_line(exc)}") from None
    missing = {"id", "image", "reference"} - set(df.columns)
    if missing:
        raise UsageError(f"{results}: missing column(s) {', '.join(sorted(missing))}")
    rows = []
    for r in df.iter_rows(named=True):
        rows.append({
            "id": str(r["id"]),
            "k": _int(r.get("k")),
            "image_path": _abs(run_dir, r.get("image")),
            "reference_path": _abs_each(run_dir, r.get("reference")),
            "target_path": _abs_each(run_dir, r.get("target")),
            "condition_path": _abs(run_dir, r.get("condition")),
            "prompt": r.get("prompt") or "",
            "gen_status": r.get("status") or "ok",
            "gen_error": r.get("error"),
            **{c: r.get(c) for c in FRAME_COLUMNS},
            **{c: r.get(c) for c in CONTROL_COLUMNS},
            **{c: r.get(c) for c in GATE_COLUMNS},
            "layout": r.get("layout"), "people_frames": r.get("people_frames"),
        })
    return pl.DataFrame(rows, schema=ROW_SCHEMA)


def gating_counts(df: pl.DataFrame) -> dict | None:
    """How the quality gate went (None: the run had none): images gated, accepted, rejected, the
    attempts made, and each rejection reason's count with the measured value left out
    (`id_similarity < 0.5`), so equal reasons group."""
    if "accepted" not in df.columns:
        return None
    gated = df.filter(pl.col("accepted").is_not_null())
    if gated.height == 0:
        return None
    reasons: dict[str, int] = {}
    for text in gated["rejection_reason"].drop_nulls():
        for part in text.split("; "):
            kind = MEASURED.sub("", part)
            reasons[kind] = reasons.get(kind, 0) + 1
    accepted = int(gated["accepted"].sum())
    return {"gated": gated.height, "accepted": accepted, "rejected": gated.height - accepted,
            "attempts": int(gated["attempts"].sum()), "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1]))}


def read_manifest(path: Path) -> pl.DataFrame:
    """A generation manifest read as `fmu generate` reads it, with ids as generate names them
    (`row<N>` where the id is missing), all as text."""
    df = read_generation_manifest(Path(path), required=("reference",))
    df = df.with_columns(row_ids(df["id"] if "id" in df.columns else None, df.height))
    scalar = [c for c in df.columns if not df[c].dtype.is_nested()]
    return df.select(scalar).with_columns(pl.all().cast(pl.String))


def _abs_each(base: Path, value) -> str | None:
    """`_abs` of a path, or of each person's path of a `|`-separated cell (empty parts kept)."""
    if value is None or SEPARATOR not in str(value):
        return _abs(base, value)
    return SEPARATOR.join(_abs(base, p) or "" for p in split_paths(value))


def _people(base: Path, entry: dict) -> dict:
    """A manifest row's reference/target paths (per person) and canonical layout, as generate
    reads them; a layout it cannot use fails the row."""
    paths = {"reference_path": _abs_each(base, entry["reference"]), "target_path": _abs_each(base, entry.get("target"))}
    try:
        return {**paths, "layout": canonical_layout(entry["reference"], entry.get("layout"))}
    except LayoutError as exc:
        return {**paths, "gen_status": "failed", "gen_error": f"{exc.kind}: {exc}"}


def _int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0  # a damaged k cell: the row is still scored, as image 0


def _controls(base: Path, entry: dict) -> tuple[dict, str | None]:
    """A manifest row's 3D controls as generate reads them (paths resolved), and the problem
    when an angle is not a number."""
    values = {c: (entry.get(c) or "").strip() or None for c in CONTROL_COLUMNS}
    for angle in POSE_ANGLES:
        if values[angle] is not None:
            try:
                values[angle] = float(values[angle])
            except ValueError:
                return {}, f"wrong_type: {angle}={values[angle]!r} is not a number"
    if values["expression"] is not None and not is_neutral(values["expression"]):
        values["expression"] = _abs(base, values["expression"])
    return values, None


_K_SUFFIX = re.compile(r"^(?P<id>.+)_(?P<k>\d+)$")


def rows_from_images(images_dir: Path, manifest: Path) -> pl.DataFrame:
    """Pair `<id>_<k>.png` / `<id>.png` files with manifest rows (references relative to the
    manifest's folder). Unpaired images and manifest ids with no image are reported rows."""
    images_dir, manifest = Path(images_dir), Path(manifest)
    if not images_dir.is_dir():
        raise UsageError(f"--images {images_dir} is not a folder")
    table = read_manifest(manifest)
    base = manifest.parent
    by_id = {str(r["id"]): r for r in table.iter_rows(named=True)}
    rows, seen = [], set()
    for path in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        stem, k = path.stem, 0
        if stem not in by_id and (m := _K_SUFFIX.match(stem)) and m["id"] in by_id:
            stem, k = m["id"], int(m["k"])
        entry = by_id.get(stem)
        seen.add(stem)
        controls, bad = _controls(base, entry) if entry else ({}, None)
        rows.append({
            "id": stem, "k": k, "image_path": str(path.resolve()),
            "condition_path": None,
            "prompt": (entry.get("prompt") or "") if entry else "",
            "gen_status": "ok" if entry and not bad else "failed",
            "gen_error": bad if entry else f"no manifest row for image {path.name}",
            **controls,
            **(_people(base, entry) if entry else {}),
        })
    for ident, entry in by_id.items():
        if ident not in seen:
            rows.append({
                "id": ident, "k": 0, "image_path": None, "condition_path": None,
                "prompt": entry.get("prompt") or "", **_people(base, entry), "gen_status": "failed",
                "gen_error": f"no image named {ident}.png or {ident}_<k>.png in {images_dir}",
            })
    return pl.DataFrame(rows, schema=ROW_SCHEMA)
