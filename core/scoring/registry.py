"""The metrics `fmu score` knows: one `Metric` per module of `metrics/`, each declaring its name, its
help line, the per-row columns it writes to scores.parquet, how its summary entries read in the
terminal table and report.html, its plots, and the function computing it. The step list, the scores
table, the summary table, the report and the CLI's `--metrics` help all read this registry, so a new
metric is one new file in `metrics/` (found there on first use) or one `register()` call.

A metric's `compute(rows, opts, progress, **variant)` fills its columns through `rows.column(name)`
(a `rows.ScoreRows`), fails rows through `rows.fail(i, reason)`, and returns its summary entries
`{summary key: stats}`; raising `MetricUnavailable` (or anything else) marks those entries
unavailable with the reason, and the other metrics still run.

On an engine (`fmu score --engine processes|ray`, `units.py`) a metric of scope "row" runs on each
unit of rows in a worker, and `merge(key, parts, rows)` makes one summary entry of the units' entries
(`rows`: every row's merged columns); a metric of scope "set" (FID: one number over all outputs)
runs once in the driver over every row.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from .rows import mean_of

Line = tuple[str, str, str, str]   # (metric, value, n, note): one line of the summary table / report


@dataclass(frozen=True)
class Column:
    """One per-row column of scores.parquet. `kind`: float | bool | int | floats (one value per
    person, in reference order). `label`: how a row's caption in report.html names it (None: not
    shown), with `digits` decimals; `person`: shown on each person's line of a row of several people
    instead of the row's caption."""

    name: str
    kind: str = "float"
    label: str | None = None
    digits: int = 3
    person: bool = False


@dataclass(frozen=True)
class Step:
    """One unit of work of a metric, resumed as a whole: its name (timings, the resume state), the
    summary keys it fills and the call computing them."""

    name: str
    keys: tuple[str, ...]
    run: Callable[..., dict[str, dict]]


@dataclass(frozen=True)
class Metric:
    """A metric of `fmu score`. `keys`: the summary entries it may fill (summary.json's `metrics`);
    `lines(key, stats)`: the summary table's lines of an available entry; `variants(opts)`: several
    steps, (step name, summary keys, keyword arguments of `compute`) each (FaceSim: one per face
    backend), else one step named after the metric filling every key; `check(opts)`: raises a
    UsageError before any work (a precision the device cannot run); `plots(scores, summary)`: inline
    SVGs for the report's Distributions; `order`: place in lists (built-ins 10..60); `scope`: row (a
    value per row, computable on a part of the rows) or set (one value over all rows); `merge(key,
    parts, rows)`: one summary entry from the entries of the units (default `merge_means`)."""

    name: str
    help: str
    compute: Callable[..., dict[str, dict]]
    keys: tuple[str, ...]
    columns: tuple[Column, ...] = ()
    lines: Callable[[str, dict], list[Line]] | None = None
    variants: Callable[..., list[tuple[str, tuple[str, ...], dict]]] | None = None
    check: Callable[..., None] | None = None
    plots: Callable[..., list[str]] | None = None
    order: int = 100
    scope: str = "row"
    merge: Callable[[str, list[dict], object], dict] | None = None

    def steps(self, opts) -> list[Step]:
        if self.variants is None:
            return [Step(self.name, self.keys, self.compute)]
        return [Step(step, keys, partial(self.compute, **kwargs)) for step, keys, kwargs in self.variants(opts)]

    def summary_lines(self, key: str, stats: dict) -> list[Line]:
        return (self.lines or mean_lines())(key, stats)

    def merged(self, key: str, parts: list[dict], rows) -> dict:
        """Summary entry `key` over every unit: unavailable only when no unit had it (the first
        reason), else the metric's merge of the available entries, noting units that lacked it."""
        ok = [p for p in parts if p.get("available")]
        if not ok:
            return parts[0] if parts else {"available": False, "reason": "no unit ran this metric"}
        entry = {"available": True, **(self.merge or merge_means)(key, ok, rows)}
        lacking = [p for p in parts if not p.get("available")]
        if lacking:
            entry["units_unavailable"] = len(lacking)
            entry["unavailable_reason"] = lacking[0].get("reason")
        return entry


_METRICS: dict[str, Metric] = {}
_LOADED: list[bool] = []   # the built-in metrics were imported


def register(metric: Metric, replace: bool = False) -> Metric:
    """Add `metric` (a name already registered is an error unless `replace`)."""
    _load_builtins()
    if metric.name in _METRICS and not replace:
        raise ValueError(f"a metric named {metric.name!r} is already registered")
    _METRICS[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    _METRICS.pop(name, None)


def registered() -> list[Metric]:
    """Every metric, in `order`."""
    _load_builtins()
    return sorted(_METRICS.values(), key=lambda m: (m.order, m.name))


def metric_names() -> tuple[str, ...]:
    """The `--metrics` choices, in order (`all` is the CLI's)."""
    return tuple(m.name for m in registered())


def metric(name: str) -> Metric:
    _load_builtins()
    return _METRICS[name]


def owner(key: str) -> Metric | None:
    """The metric that fills summary entry `key` (None: not a registered one)."""
    return next((m for m in registered() if key in m.keys), None)


def columns() -> list[Column]:
    return [c for m in registered() for c in m.columns]


def help_text() -> str:
    """The `--metrics` help: every metric's name and help line."""
    names = metric_names()
    return f"Comma list of {', '.join(names)}, or all. " + "; ".join(f"{m.name}: {m.help}" for m in registered())


def fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def mean_lines(digits: int = 4) -> Callable[[str, dict], list[Line]]:
    """The usual line: the entry's mean, its count and its scale."""
    return lambda key, m: [(key, fmt(m["mean"], digits), str(m["n"]), m.get("scale", ""))]


def summed_counts(parts: list[dict]) -> dict:
    """The first entry's fields with every count (`n`, `n_*`) summed over the entries."""
    out = dict(parts[0])
    for name, value in parts[0].items():
        if (name == "n" or name.startswith("n_")) and isinstance(value, int):
            out[name] = sum(p.get(name) or 0 for p in parts)
    return out


def weighted_mean(parts: list[dict], field: str, weight: str = "n") -> float | None:
    """The mean of the entries' `field`, each weighted by its `weight` count (None: no entry has one)."""
    pairs = [(p[field], p.get(weight) or 0) for p in parts if p.get(field) is not None]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


def merge_means(key: str, parts: list[dict], rows) -> dict:
    """The usual merge: counts summed, and `mean` the mean of the merged per-row column named `key`
    when there is one (else the units' means weighted by their `n`)."""
    out = summed_counts(parts)
    if "mean" in out:
        column = rows.values.get(key)
        out["mean"] = mean_of(column) if column is not None else weighted_mean(parts, "mean")
    return out


def _load_builtins() -> None:
    """Import every module of `metrics/` once; each registers its metric."""
    if _LOADED:
        return
    _LOADED.append(True)
    package = importlib.import_module(f"{__package__}.metrics")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
