"""The generation manifest's columns, their types and their allowed ranges."""

from __future__ import annotations

import polars as pl

REQUIRED = ("reference", "prompt")

# column -> (polars dtype, description). Documented for users in manifests/README.md.
COLUMNS: dict[str, tuple[pl.DataType, str]] = {
    "reference": (pl.String, "reference photo, path relative to the manifest's folder"),
    "prompt": (pl.String, "text prompt"),
    "id": (pl.String, "row id used in output names; default: row<N>"),
    "negative_prompt": (pl.String, "negative prompt; default: the method's fixed negative prompt"),
    "seed": (pl.Int64, "base seed; image k uses seed + k; default: --seed + row number"),
    "num_images": (pl.Int64, "images for this row; default 1"),
    "target": (pl.String, "image whose pose, expression and lighting to use (3D channel)"),
    "id_scale": (pl.Float64, "identity-channel strength"),
    "guidance_scale": (pl.Float64, "classifier-free guidance scale"),
    "steps": (pl.Int64, "denoising steps"),
    "width": (pl.Int64, "output width (multiple of 8)"),
    "height": (pl.Int64, "output height (multiple of 8)"),
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
}

OVERRIDES = ("id_scale", "guidance_scale", "steps", "width", "height")

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

# a record the CSV reader could not read: this column of read_manifest's table says why (kind: line N: ...)
READ_ERROR = "_read_error"
