"""`fmu score`: the paper's metrics over a run (FaceSim, CLIP-T/I, DINO, LPIPS, FID, Pose/Light-RMSE),
counted honestly, with summary.json and report.html (see README.md here)."""

from .run import METRICS, ScoreOptions, ScoreResult, check_options, score_images, score_rows, score_run
from .weights import MetricUnavailable

__all__ = ["METRICS", "MetricUnavailable", "ScoreOptions", "ScoreResult", "check_options", "score_images",
           "score_rows", "score_run"]
