"""The generation manifest's columns, their types and their allowed ranges."""

from __future__ import annotations

import polars as pl

from ..shading.controls import CONTROL_COLUMNS, POSE_BOUNDS

REQUIRED = ("reference", "prompt")

# column -> (polars dtype, description). Documented for users in manifests/README.md.
COLUMNS: dict[str, tuple[pl.DataType, str]] = {
    "reference": (pl.String, "reference photo, path relative to the manifest's folder; several people: "
                             "up to 4 paths separated by `|`, left to right (people_layout.py)"),
    "prompt": (pl.String, "text prompt"),
    "id": (pl.String, "row id used in output names; default: row<N>"),
    "negative_prompt": (pl.String, "negative prompt; default: the method's fixed negative prompt"),
    "seed": (pl.Int64, "base seed; image k uses seed + k; default: --seed + row number"),
    "num_images": (pl.Int64, "images for this row; default 1"),
    "target": (pl.String, "image whose pose, expression and lighting to use (3D channel); one per person"),
    "id_scale": (pl.Float64, "identity-channel strength"),
    "guidance_scale": (pl.Float64, "classifier-free guidance scale"),
    "steps": (pl.Int64, "denoising steps"),
    "width": (pl.Int64, "output width (multiple of 8)"),
    "height": (pl.Int64, "output height (multiple of 8)"),
    "yaw": (pl.Float64, "head yaw of the rendered face, degrees (> 0: toward the image's right)"),
    "pitch": (pl.Float64, "head pitch of the rendered face, degrees (> 0: looking up)"),
    "roll": (pl.Float64, "head roll of the rendered face, degrees (> 0: clockwise)"),
    "expression": (pl.String, "image whose expression the rendered face wears, or `neutral`"),
    "light": (pl.String, "light of the rendered face: a preset, az=..,el=..[,strength=..] or 9 SH numbers"),
    "layout": (pl.String, "several people: `auto` (side by side) or one box x0,y0,x1,y1 (0..1) per person, "
                          "separated by `|`"),
}

# Inclusive bounds for numeric columns: beyond them a value is a mistake, not a wish.
BOUNDS: dict[str, tuple[float, float]] = {
    "seed": (0, 2**32 - 1),
    "num_images": (1, 64),
    "id_scale": (0.0, 5.0),
    "guidance_scale": (0.0, 50.0),
    "steps": (1, 1000),
    "width": (64, 2048),
    "height": (64, 2048),
    **POSE_BOUNDS,
}

# The longest cell each column takes, in characters (a path: PATH_MAX per person, up to 4 people and
# their `|`). A longer cell is the row's only problem (cell_too_long) and is never parsed: no parser
# (numbers, light, layout, people) sees more than this, so no cell can make validation slow.
PATH_CHARS = 4 * 4096 + 3
MAX_CELL_CHARS: dict[str, int] = {
    "reference": PATH_CHARS, "target": PATH_CHARS, "expression": 4096, "prompt": 20_000,
    "negative_prompt": 20_000, "id": 128, "light": 512, "layout": 512,
    **{name: 64 for name, (dtype, _) in COLUMNS.items() if dtype != pl.String},
}

OVERRIDES = ("id_scale", "guidance_scale", "steps", "width", "height")
# the 3D channel's controls (core.shading.controls): they change the condition a row is rendered with
CONTROLS = CONTROL_COLUMNS

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

# a record the CSV reader could not read: this column of read_manifest's table says why (kind: line N: ...)
READ_ERROR = "_read_error"


def row_ids(ids: pl.Series | None, n: int, fallback: pl.Series | None = None) -> pl.Series:
    """Each row's id, the one rule every reader uses (validate, expand, score's inputs, prepare): the
    row's own id (as text, surrounding spaces dropped), else where it is missing or blank the row's
    `fallback` (prepare: the image's file stem), else `row<N>`, N the 0-based row number in 6 digits
    (`row000007`), so that outputs are named `row000007_<k>.png`."""
    def text(series: pl.Series | None) -> pl.Series:
        blank = pl.Series("id", [None] * n, dtype=pl.String)
        return (blank if series is None else series.cast(pl.String)).str.strip_chars()

    given, other = text(ids), text(fallback)
    number = pl.Series("row", range(n), dtype=pl.Int64).cast(pl.String).str.zfill(6)
    present = given.str.len_chars().fill_null(0) > 0
    has_other = other.str.len_chars().fill_null(0) > 0
    return pl.select(pl.when(present).then(given).when(has_other).then(other)
                     .otherwise(pl.format("row{}", number))).to_series().alias("id")
