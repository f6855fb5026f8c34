"""Second-order spherical-harmonics lighting: basis, shading and the robust least-squares solve
(pure numpy on normals; `light_fit.fit_sh` applies it to a photo's face).

Basis: the 9 real SH functions of Ramamoorthi & Hanrahan (2001), evaluated on unit normals
in the VIEW frame (x right, y up, z toward the viewer; `view_normals` converts from the
mesh's pixel frame), in the order

    0: 0.282095                  (l=0)
    1: 0.488603 * y              (l=1, m=-1)
    2: 0.488603 * z              (l=1, m=0)
    3: 0.488603 * x              (l=1, m=1)
    4: 1.092548 * x * y          (l=2, m=-2)
    5: 1.092548 * y * z          (l=2, m=-1)
    6: 0.315392 * (3 z^2 - 1)    (l=2, m=0)
    7: 1.092548 * x * z          (l=2, m=1)
    8: 0.546274 * (x^2 - y^2)    (l=2, m=2)

The shading of a normal n is sum_k sh[k] * Y_k(n), in image intensity units [0, 1]. The
Lambertian convolution factors (pi, 2pi/3, pi/4) and the mean albedo are folded into the
coefficients: what `fit_sh` (light_fit.py) returns is directly what `render` draws. So
sh[2] > 0 means light from the front, sh[1] > 0 light from above, sh[3] > 0 light from the
image's right.
Intensities are sRGB values / 255, not linearised: the condition image lives in that space.
"""

from __future__ import annotations

import numpy as np

SH_CONSTANTS = np.array([0.282095, 0.488603, 0.488603, 0.488603,
                         1.092548, 1.092548, 0.315392, 1.092548, 0.546274])
LUMA = np.array([0.299, 0.587, 0.114])  # Rec. 601 luminance weights
MIN_FIT_PIXELS = 64


def view_normals(normals_px: np.ndarray) -> np.ndarray:
    """Pixel frame (x right, y down, z away) -> view frame (x right, y up, z toward viewer)."""
    return np.asarray(normals_px, dtype=np.float64) * np.array([1.0, -1.0, -1.0])


def sh_basis(normals_view: np.ndarray) -> np.ndarray:
    """(..., 3) unit normals in the view frame -> (..., 9) basis values."""
    n = np.asarray(normals_view, dtype=np.float64)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    one = np.ones_like(x)
    raw = np.stack([one, y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y], axis=-1)
    return raw * SH_CONSTANTS


def shade(normals_view: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """Shading per normal: (..., 3) normals, (9,) or (C, 9) coefficients -> (...) or (..., C)."""
    basis = sh_basis(normals_view)
    sh = np.asarray(sh, dtype=np.float64)
    return basis @ sh if sh.ndim == 1 else basis @ sh.T


def solve_sh(basis: np.ndarray, values: np.ndarray, trim: float = 2.5, iterations: int = 2) -> np.ndarray:
    """Least squares `basis @ sh = values`, refitted `iterations` times without the pixels
    whose residual exceeds `trim` robust sigmas (eyes, brows, lips, speculars, hair strands
    that the shading model cannot explain). values: (M,) or (M, C)."""
    keep = np.ones(len(basis), dtype=bool)
    sh = np.linalg.lstsq(basis, values, rcond=None)[0]
    for _ in range(iterations):
        resid = values - basis @ sh
        r = np.abs(resid) if resid.ndim == 1 else np.abs(resid).max(axis=1)
        mad = np.median(np.abs(resid - np.median(resid, axis=0)), axis=0)
        # Floor at one grey level: on exact renders the MAD is quantisation noise only.
        sigma = np.maximum(1.4826 * np.max(mad), 1.0 / 255.0)
        new_keep = r <= trim * sigma
        if new_keep.sum() < max(MIN_FIT_PIXELS, basis.shape[1]) or np.array_equal(new_keep, keep):
            break
        keep = new_keep
        sh = np.linalg.lstsq(basis[keep], values[keep], rcond=None)[0]
    return sh
