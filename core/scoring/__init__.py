"""`fmu score`: the paper's metrics over a run (FaceSim, CLIP-T/I, DINO, LPIPS, FID, Pose/Light-RMSE),
counted honestly, with summary.json and report.html (see README.md here). The metrics are a registry
(`registry.py`, one module each in `metrics/`): `register(Metric(...))` adds one."""

from .options import ScoreOptions
from .registry import Column, Metric, metric, metric_names, register, registered, unregister
from .run import ScoreResult, check_options, score_images, score_rows, score_run
from .weights import MetricUnavailable

__all__ = ["Column", "Metric", "MetricUnavailable", "ScoreOptions", "ScoreResult", "check_options", "metric",
           "metric_names",
           "register", "registered", "score_images", "score_rows", "score_run", "unregister"]
