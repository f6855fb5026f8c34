"""Pose and lighting consistency metrics (the paper's Pose-RMSE and Light-RMSE), pure numpy.

Both accept single vectors or stacks (leading batch axes) and return a float or an array.
"""

from __future__ import annotations

import numpy as np


def _wrap_deg(d: np.ndarray) -> np.ndarray:
    """Angle differences into [-180, 180): 179 and -179 degrees are 2 degrees apart."""
    return (d + 180.0) % 360.0 - 180.0


def pose_error_deg(pose_a, pose_b) -> float | np.ndarray:
    """RMSE over (yaw, pitch, roll) in degrees: sqrt(mean_k (a_k - b_k)^2), differences wrapped."""
    a = np.asarray(pose_a, dtype=np.float64)
    b = np.asarray(pose_b, dtype=np.float64)
    if a.shape[-1] != 3 or b.shape[-1] != 3:
        raise ValueError("poses are (yaw, pitch, roll) triples")
    err = np.sqrt(np.mean(_wrap_deg(a - b) ** 2, axis=-1))
    return float(err) if err.ndim == 0 else err


def normalise_sh(sh) -> np.ndarray:
    """SH vector divided by its Euclidean norm (last axis); NaN for an all-zero vector."""
    s = np.asarray(sh, dtype=np.float64)
    n = np.linalg.norm(s, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / n, np.nan)


def light_error(sh_a, sh_b) -> float | np.ndarray:
    """RMSE between the norm-normalised SH vectors: sqrt(mean_k (a_k/|a| - b_k/|b|)^2).

    Why normalise: fitted coefficients carry the face's albedo and the photo's exposure as
    one common factor on all 9 terms (lighting.py folds albedo in), so a darker skin or a
    brighter camera would read as "different light". Dividing by the norm keeps the light's
    shape (direction, spread, ambient-to-directional balance) and drops that scale. With 9
    coefficients the value lies in [0, 2/3]."""
    a = normalise_sh(sh_a)
    b = normalise_sh(sh_b)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError("SH vectors differ in length")
    err = np.sqrt(np.mean((a - b) ** 2, axis=-1))
    return float(err) if err.ndim == 0 else err
