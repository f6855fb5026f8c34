"""Output-relative boxes: where each person of a several-people image goes.

A box is (x0, y0, x1, y1) as fractions of the output's width and height. A module of its own, with
no imports, because the model (masks), the runner (conditions), scoring (crops) and the manifest
(layouts) all need the one rounding, and the model must load where polars is not installed (the
GPU benchmark's machine)."""

from __future__ import annotations

Box = tuple[float, float, float, float]


def pixel_box(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of an output-relative box in a width x height image's pixels
    (right and bottom exclusive): the one rounding every stage (masks, conditions, scores) uses."""
    x0, y0, x1, y1 = box
    return round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height)
