"""`fmu expand`: a manifest times a grid of 3D controls -> an explicit manifest with one row per
(row, combination), so `fmu generate` stays the one generator and the grid is a file a person can
read, edit and version.

Axes: `yaw`, `pitch`, `roll` (`start:stop:step`, stop included, or a comma list), `expression`
(image paths or `neutral`) and `light` (presets, `az=..,el=..` specs, nine SH numbers). Each output
id is the row's id with one `_<axis><value>` part per axis, e.g. `astro_yaw-45_light-left`. Paths
(reference, target, expression) are rewritten relative to the new manifest's folder, so it works
from wherever it is written.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path

import numpy as np
import polars as pl

from ..errors import UsageError
from ..images import atomic_write_bytes
from ..shading.controls import CONTROL_COLUMNS, POSE_ANGLES, POSE_BOUNDS, is_neutral
from ..shading.light_presets import LightError, parse_light
from .people_layout import SEPARATOR, is_several, split_paths
from .read import read_manifest
from .schema import ID_PATTERN, row_ids

PATH_COLUMNS = ("reference", "target", "expression")
ID_PARTS = {"yaw": "yaw", "pitch": "pitch", "roll": "roll", "expression": "expr", "light": "light"}
MAX_ROWS = 1_000_000   # a grid this big is a typo in a range, not a plan


def parse_angles(name: str, texts: list[str]) -> list[float]:
    """`start:stop:step` ranges (stop included when the steps land on it) and comma lists, in the
    order given, duplicates dropped; values outside POSE_BOUNDS refused."""
    values: list[float] = []
    for text in texts:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            try:
                if ":" in part:
                    start, stop, step = (float(v) for v in part.split(":"))
                    if not all(map(math.isfinite, (start, stop, step))) or step == 0 or (stop - start) / step < 0:
                        raise ValueError
                    # counted before any value is made: a step of 1e-7 would build millions first
                    count = math.floor((stop - start) / step + 1e-9) + 1
                    if len(values) + count > MAX_ROWS:
                        raise UsageError(f"--{name} {part!r} gives {count:,} values (over {MAX_ROWS:,}); "
                                         "check the step")
                    values += [start + i * step for i in range(count)]
                else:
                    values.append(float(part))
            except (ValueError, OverflowError):
                raise UsageError(f"--{name} {part!r}: give start:stop:step with finite numbers (e.g. -45:45:15) "
                                 "or numbers separated by commas") from None
    lo, hi = POSE_BOUNDS[name]
    for v in values:
        if not (math.isfinite(v) and lo <= v <= hi):
            raise UsageError(f"--{name} {v:g}: outside [{lo:g}, {hi:g}]")
    return list(dict.fromkeys(round(v, 6) for v in values))


def split_lights(texts: list[str]) -> list[str]:
    """Light values from options: `;` separates lights; `,` too, unless the text is one
    `az=..,el=..` spec or nine numbers (whose commas are their own)."""
    lights: list[str] = []
    for text in texts:
        for part in (p.strip() for p in text.split(";") if p.strip()):
            try:
                parse_light(part)
                lights.append(part)
            except LightError:
                lights += [p.strip() for p in part.split(",") if p.strip()]
    for light in lights:
        try:
            parse_light(light)
        except LightError as exc:
            raise UsageError(f"--light: {exc}") from None
    return list(dict.fromkeys(lights))


def split_expressions(texts: list[str]) -> list[str]:
    """Expression values: `neutral` or image paths (checked to exist), comma separated or repeated."""
    values = [p.strip() for text in texts for p in text.split(",") if p.strip()]
    for v in values:
        if not is_neutral(v) and not Path(v).is_file():
            raise UsageError(f"--expression {v}: no such image file")
    return list(dict.fromkeys("neutral" if is_neutral(v) else v for v in values))


def _label(axis: str, value, position: int) -> str:
    """The readable id part of one axis value."""
    if axis in POSE_ANGLES:
        return f"{value:g}"
    if axis == "expression":
        text = "neutral" if is_neutral(value) else Path(value).stem
    else:
        name = str(value).strip()
        if re.fullmatch(r"[A-Za-z-]+", name):                       # a preset
            text = name.lower()
        elif "=" in name:                                          # az=30,el=10 -> az30-el10
            text = name.replace(" ", "").replace("=", "").replace(",", "-")
        else:                                                      # nine numbers
            text = f"sh{position + 1}"
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-.") or f"{position + 1}"


def _labels(axis: str, values: list) -> list[str]:
    labels = [_label(axis, v, i) for i, v in enumerate(values)]
    if len(set(labels)) < len(labels):  # two values that read the same: number them
        labels = [f"{lab}{i + 1}" for i, lab in enumerate(labels)]
    return [f"{ID_PARTS[axis]}{lab}" if axis in POSE_ANGLES else f"{ID_PARTS[axis]}-{lab}" for lab in labels]


def _rebase(value, source_dir: Path, out_dir: Path):
    """A manifest path relative to `source_dir` -> relative to `out_dir` (absolute stays absolute);
    each person's path of a `|`-separated cell (people_layout.py) likewise."""
    if value is None or not str(value).strip() or "://" in str(value)[:16] or is_neutral(str(value)):
        return value
    if is_several(value):
        return SEPARATOR.join(_rebase(p, source_dir, out_dir) if p else "" for p in split_paths(value))
    path = Path(str(value).strip())
    if path.is_absolute():
        return str(path)
    return os.path.relpath((source_dir / path).absolute(), out_dir.absolute())


def replaced_values(df: pl.DataFrame, axes: list[str]) -> dict[str, list[str]]:
    """Per grid axis, the ids of the rows that already have a value in that column (the grid would
    replace it)."""
    found = {}
    for axis in axes:
        if axis not in df.columns:
            continue
        cell = pl.col(axis).cast(pl.String).str.strip_chars()
        hit = df.filter(cell.is_not_null() & (cell != ""))
        if hit.height:
            found[axis] = hit["id"].cast(pl.String).to_list()
    return found


def expand_manifest(manifest: Path, axes: dict[str, list], out: Path, override: bool = False,
                    log=None) -> pl.DataFrame:
    """The expanded table (see module doc); `axes` maps control columns to their values (values of
    `expression` relative to the working folder, as typed on a command line). A grid axis that would
    replace values rows already have is a UsageError unless `override` (then `log` gets a warning)."""
    axes = {a: v for a, v in axes.items() if v}
    unknown = set(axes) - set(CONTROL_COLUMNS)
    if unknown:
        raise ValueError(f"not control columns: {sorted(unknown)}")
    if not axes:
        raise UsageError("nothing to expand: give at least one of --yaw, --pitch, --roll, --expression, --light")
    manifest = Path(manifest)
    df = read_manifest(manifest)
    out_dir = Path(out).parent
    order = [a for a in CONTROL_COLUMNS if a in axes]
    n = df.height * int(np.prod([len(axes[a]) for a in order]))
    if n > MAX_ROWS:
        raise UsageError(f"the grid would have {n:,} rows (over {MAX_ROWS:,}); check the ranges")

    df = df.with_columns(row_ids(df["id"] if "id" in df.columns else None, df.height))
    replaced = replaced_values(df, order)
    if replaced:
        said = "; ".join(f"{axis} in {len(rows)} row(s) (first: {rows[0]})" for axis, rows in replaced.items())
        if not override:
            raise UsageError(f"the grid would replace values the manifest already has: {said}; pass --override "
                             "to replace them, or leave those axes out")
        if log is not None:
            log(f"replacing values the manifest already had: {said}")
    for column in PATH_COLUMNS:
        if column in df.columns:
            df = df.with_columns(pl.col(column).map_elements(
                lambda v: _rebase(v, manifest.parent, out_dir), return_dtype=pl.String))

    grid = pl.DataFrame({"_combo": [0]})
    for axis in order:
        values = axes[axis]
        if axis == "expression":  # typed on the command line: relative to the working folder
            values = [_rebase(v, Path.cwd(), out_dir) for v in values]
        dtype = pl.Float64 if axis in POSE_ANGLES else pl.String
        column = pl.DataFrame({axis: pl.Series(values, dtype=dtype), f"_{axis}_id": _labels(axis, axes[axis])})
        grid = grid.join(column, how="cross")
    suffix = pl.concat_str([pl.col(f"_{a}_id") for a in order], separator="_")
    table = (df.drop([a for a in order if a in df.columns]).with_row_index("_row")
             .join(grid.with_row_index("_cell"), how="cross")
             .sort("_row", "_cell")
             .with_columns(id=pl.concat_str([pl.col("id"), suffix], separator="_")))
    too_long = table.filter(~pl.col("id").str.contains(ID_PATTERN))
    if too_long.height:
        raise UsageError(f"id {too_long['id'][0]!r} is not a valid id (1-128 letters, digits, '.', '_', '-'): "
                         "shorten the row's id")
    kept = [c for c in df.columns if c not in order]
    return table.select(*kept, *order)


def write_manifest(table: pl.DataFrame, out: Path) -> None:
    """CSV (.csv) or Parquet (.parquet) by the file's suffix, written atomically."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise UsageError(f"--out {out.name}: give a .csv or .parquet file name")
    buf = io.BytesIO()
    if suffix == ".csv":
        table.write_csv(buf)
    else:
        table.write_parquet(buf)
    atomic_write_bytes(out, buf.getvalue())
