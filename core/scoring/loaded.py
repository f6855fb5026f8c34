"""The metric models a score worker keeps loaded between its work units.

A metric builds its model on each call (`ClipScorer(...)`, a face backend, ...): right for one
`fmu score` pass, where each metric runs once over every row. A worker of an engine (processes,
Ray actor) runs the metrics once per unit of rows; `keep_models()` (called once in the worker's
process) makes `model(factory, *args)` hand back the instance built for the same arguments, so the
weights load once per worker, not once per unit. Outside a worker nothing is kept: a library user
calling `fmu.score` twice does not hold models in memory after the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_KEPT: dict[tuple, Any] = {}
_KEEPING: list[bool] = []   # keep_models() was called in this process


def keep_models() -> None:
    """From now on, this process keeps every model `model()` builds (one per distinct arguments)."""
    if not _KEEPING:
        _KEEPING.append(True)


def model(factory: Callable, *args, **kwargs):
    """`factory(*args, **kwargs)`, or the instance built for the same call when models are kept. A
    factory that raises is called again next time (the reason may be gone: a file appeared)."""
    if not _KEEPING:
        return factory(*args, **kwargs)
    key = (factory, args, tuple(sorted(kwargs.items())))
    if key not in _KEPT:
        _KEPT[key] = factory(*args, **kwargs)
    return _KEPT[key]
