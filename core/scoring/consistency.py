"""Pose-RMSE and Light-RMSE from the shading channel: the per-row errors come from
`core.shading.consistency.ConsistencyScorer` (the code `fmu generate` uses too); this module
aggregates them.

Definition (paper): the 3D face fit of each output against the fit of the image its shading
condition came from (the row's target, else its reference). The source is fitted in the frame
generation used (the square results.parquet records, else the centre square, at max(output
side, 512)), so `fmu score` gives the numbers `fmu generate` wrote for the same row.
- pose error per row: `shading.pose_error_deg` = RMSE over (yaw, pitch, roll) in degrees;
- light error per row: `shading.light_error` = RMSE of the norm-normalised 9 SH coefficients
  fitted to each image's visible face (`fit_sh` on the reconstructed mesh);
- the run's Pose-RMSE / Light-RMSE = sqrt(mean over rows of the squared per-row errors).
Rows that asked for a pose or light (`yaw`, `pitch`, `roll`, `light`) are compared with the request
instead: the asked angles replace the fitted ones and the asked light replaces the fitted SH
(`core.shading.controls.requested_fit`), as generate's condition did.
The reconstructor is the shading channel's default (mediapipe FaceMesh, offline). An image
where it finds no face has no value; such rows are counted in `n_no_fit`.
"""

from __future__ import annotations

import numpy as np


def rmse(values: list) -> float | None:
    """The run's Pose-RMSE / Light-RMSE: sqrt(mean of the squared per-row errors); None if none."""
    vals = [v for v in values if v is not None]
    return float(np.sqrt(np.mean(np.square(vals)))) if vals else None
