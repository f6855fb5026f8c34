"""Pose and lighting consistency of a generated image with its shading source (the per-image
values behind the paper's Pose-RMSE and Light-RMSE).

`pose_error_deg` and `light_error` are pure numpy: single vectors or stacks (leading batch axes)
in, a float or an array out. `ConsistencyScorer` fits images with this package's reconstructor
and SH fit and compares them; `fmu generate` writes its values per image and `fmu score`
(core.scoring.consistency) computes and aggregates the same ones.
"""

from __future__ import annotations

import numpy as np

from .condition import ANALYSIS_SIZE, analyse_frame
from .light_fit import fit_sh
from .mesh import ReconstructorUnavailable
from .reconstruct import get_reconstructor, reconstruct


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


class ConsistencyScorer:
    """Fits (pose, SH lighting) of images and compares them; raises ReconstructorUnavailable
    when the reconstructor cannot run here."""

    def __init__(self, reconstructor: str = "mediapipe"):
        try:
            get_reconstructor(reconstructor)      # builds the graph once; fails here if unusable
        except Exception as exc:  # noqa: BLE001  any failure to build it means "cannot run here"
            raise ReconstructorUnavailable(f"shading reconstructor {reconstructor!r} unavailable: "
                                           f"{type(exc).__name__}: {exc}") from None
        self.reconstructor = reconstructor

    def fit(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pose (3,), sh (9,)) of the face in `image`; raises NoFaceError when there is none."""
        mesh = reconstruct(image, backend=self.reconstructor)
        return np.asarray(mesh.pose, np.float64), np.asarray(fit_sh(image, mesh), np.float64)

    def fit_source(self, image: np.ndarray, output_side: int, box=None) -> tuple[np.ndarray, np.ndarray]:
        """(pose, sh) of a reference/target as generation fitted it for its condition; `box` =
        (left, top, side) of its frame (None: the centre square)."""
        mesh, sh = analyse_frame(image, max(output_side, ANALYSIS_SIZE), self.reconstructor, box)
        return np.asarray(mesh.pose, np.float64), np.asarray(sh, np.float64)

    def errors(self, out_fit, source_fit) -> tuple[float, float]:
        """(pose error in degrees, light error) of an output's fit against its source's."""
        return (float(pose_error_deg(source_fit[0], out_fit[0])),
                float(light_error(source_fit[1], out_fit[1])))
