"""Fit SH lighting to a photo's face: the mesh's per-pixel normals (`render.normal_map`) against the
face pixels' luminance, solved robustly (`lighting.solve_sh`). Conventions in lighting.py."""

from __future__ import annotations

import numpy as np

from ..errors import NoFaceError
from .lighting import LUMA, MIN_FIT_PIXELS, sh_basis, solve_sh, view_normals
from .render import normal_map


def fit_sh(image_rgb: np.ndarray, mesh, per_channel: bool = False, backend: str = "cpu") -> np.ndarray:
    """Fit SH lighting to the visible face pixels of `image_rgb` (the image `mesh` was
    reconstructed from, same frame). Returns (9,) float32 on luminance, or (3, 9) per RGB
    channel with `per_channel=True`."""
    h, w = image_rgb.shape[:2]
    normals, mask = normal_map(mesh, h, w, backend=backend)
    if mask.sum() < MIN_FIT_PIXELS:
        raise NoFaceError(f"face covers {int(mask.sum())} pixels: too few to fit lighting")
    basis = sh_basis(view_normals(normals[mask]))
    pixels = np.asarray(image_rgb, dtype=np.float64)[mask] / 255.0
    values = pixels if per_channel else pixels @ LUMA
    sh = solve_sh(basis, values)
    return (sh.T if per_channel else sh).astype(np.float32)
