"""Pose-RMSE and Light-RMSE from the shading channel (`core.shading`).

Definition (paper): the 3D face fit of each output against the fit of the image its shading
condition came from (the row's target, else its reference). The source is fitted in the frame
generation used (the square results.parquet records, else the centre square, at max(output
side, 512)), so `fmu score` gives the numbers `fmu generate` wrote for the same row.
- pose error per row: `shading.pose_error_deg` = RMSE over (yaw, pitch, roll) in degrees;
- light error per row: `shading.light_error` = RMSE of the norm-normalised 9 SH coefficients
  fitted to each image's visible face (`fit_sh` on the reconstructed mesh);
- the run's Pose-RMSE / Light-RMSE = sqrt(mean over rows of the squared per-row errors).
The reconstructor is the shading channel's default (mediapipe FaceMesh, offline). An image
where it finds no face has no value; such rows are counted in `n_no_fit`.
"""

from __future__ import annotations

import numpy as np

from .weights import MetricUnavailable


class ConsistencyScorer:
    def __init__(self, reconstructor: str = "mediapipe"):
        try:
            from ..shading import fit_sh, light_error, pose_error_deg, reconstruct
            from ..shading.reconstruct import get_reconstructor

            get_reconstructor(reconstructor)      # builds the graph once; fails here if unusable
        except Exception as exc:
            raise MetricUnavailable(f"shading reconstructor {reconstructor!r} unavailable: "
                                    f"{type(exc).__name__}: {exc}") from None
        self._fit_sh, self._reconstruct = fit_sh, reconstruct
        self._pose_error, self._light_error = pose_error_deg, light_error
        self.reconstructor = reconstructor

    def fit(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pose (3,), sh (9,)) of the face in `image`; raises NoFaceError when there is none."""
        mesh = self._reconstruct(image, backend=self.reconstructor)
        return np.asarray(mesh.pose, np.float64), np.asarray(self._fit_sh(image, mesh), np.float64)

    def fit_source(self, image: np.ndarray, output_side: int, box=None) -> tuple[np.ndarray, np.ndarray]:
        """(pose, sh) of a reference/target as generation fitted it for its condition; `box` =
        (left, top, side) of its frame (None: the centre square)."""
        from ..shading.condition import ANALYSIS_SIZE, analyse_frame

        mesh, sh = analyse_frame(image, max(output_side, ANALYSIS_SIZE), self.reconstructor, box)
        return np.asarray(mesh.pose, np.float64), np.asarray(sh, np.float64)

    def errors(self, out_fit, source_fit) -> tuple[float, float]:
        return (float(self._pose_error(source_fit[0], out_fit[0])),
                float(self._light_error(source_fit[1], out_fit[1])))


def rmse(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.sqrt(np.mean(np.square(vals)))) if vals else None
