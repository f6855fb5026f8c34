"""Pose-RMSE and Light-RMSE: hook to the shading channel (`core.shading.consistency`).

Definition (paper): the 3D face fit of the output against that of the image whose pose and
lighting the condition was rendered from (the row's target, else its reference): RMSE of
head pose in degrees, RMSE of the spherical-harmonics lighting coefficients.
The shading package computes both; until it is importable these columns are reported as
unavailable with that reason (no numbers are invented).
"""

from __future__ import annotations

import numpy as np

from .weights import MetricUnavailable


class ConsistencyScorer:
    def __init__(self):
        try:
            from ..shading import consistency  # noqa: F401
        except ImportError as exc:
            raise MetricUnavailable(f"shading channel not available ({exc}); "
                                    "Pose-RMSE/Light-RMSE need core.shading.consistency") from None
        self.impl = consistency
        if not (hasattr(consistency, "pose_error_deg") and hasattr(consistency, "light_error")):
            raise MetricUnavailable("core.shading.consistency lacks pose_error_deg/light_error")

    def errors(self, output: np.ndarray, source: np.ndarray) -> tuple[float | None, float | None]:
        """(pose error in degrees, lighting error) of `output` against `source`."""
        return (float(self.impl.pose_error_deg(source, output)), float(self.impl.light_error(source, output)))
