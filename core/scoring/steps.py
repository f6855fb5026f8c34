"""Running one metric step: its summary entries, or the reason it could not run. Shared by the
one-process score (run.py) and the engines' workers (score_worker.py)."""

from __future__ import annotations

import time

from .registry import Step
from .weights import MetricUnavailable


def no_progress(label, total):
    """A progress factory that shows nothing."""
    return lambda n=1: None


def attempt(step: Step, rows, opts, progress, timings: dict) -> dict[str, dict]:
    """The summary entries of one step: its stats marked available, or every key it fills marked
    unavailable with the reason (a missing model, a broken weights file: that metric's problem, not
    the run's). Records the step's seconds in `timings`."""
    t0 = time.perf_counter()
    try:
        result = step.run(rows, opts, progress)
    except MetricUnavailable as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001  a broken model file is this metric's problem, not the run's
        reason = f"failed: {type(exc).__name__}: {exc}"[:300]
    else:
        return {key: {"available": True, **stats} for key, stats in result.items()}
    finally:
        timings[f"{step.name}_s"] = round(time.perf_counter() - t0, 3)
    return {key: {"available": False, "reason": reason} for key in step.keys}
