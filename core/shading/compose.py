"""Several people's conditions in one frame: each person's render placed in their box.

Each render is made for its box (the person's own frame, cropped to the box's aspect and sized to
it, by the same code a one-person condition uses); here they are placed on a black canvas of the
output's size. The ShadingNet gets one canvas per person (only that person's face, background 0
elsewhere: core/model/masked_identity.py runs one pass each); the composed condition (their pixelwise
maximum, so faces in overlapping boxes both stay visible) is what a user sees in
`conditions/<id>.png`.
"""

from __future__ import annotations

import numpy as np


def place(renders: list[np.ndarray], boxes: list[tuple[int, int, int, int]], width: int, height: int
          ) -> np.ndarray:
    """(n, H, W) uint8 canvases: render i (its box's size) at pixel box i = (left, top, right,
    bottom), 0 elsewhere."""
    canvases = np.zeros((len(renders), height, width), np.uint8)
    for canvas, render, (left, top, right, bottom) in zip(canvases, renders, boxes):
        if render.shape[:2] != (bottom - top, right - left):
            raise ValueError(f"render {render.shape[:2]} does not fit box {(left, top, right, bottom)}")
        canvas[top:bottom, left:right] = render
    return canvases


def compose(canvases: np.ndarray) -> np.ndarray:
    """The one condition image of several people: the pixelwise maximum of their canvases."""
    return np.asarray(canvases).max(axis=0)
