"""`fmu score`: the paper's metrics over a run, counted honestly (see README.md here)."""

from .run import METRICS, ScoreOptions, ScoreResult, score_images, score_rows, score_run
from .weights import MetricUnavailable

__all__ = ["METRICS", "MetricUnavailable", "ScoreOptions", "ScoreResult", "score_images", "score_rows",
           "score_run"]
