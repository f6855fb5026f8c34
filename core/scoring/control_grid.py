"""report.html's control grids: for each reference whose rows asked for a pose, expression or light,
one table with one control down the rows and the others across the columns, each cell showing the
images made for that combination, each with its condition thumbnail, prompt and Pose/Light errors
against the request.

`grid_layout` is the pure part (which controls vary, in what order, which rows fall in which cell);
`grids_html` draws it with the report's thumbnails.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..shading.controls import CONTROL_COLUMNS

AS_FITTED = "as fitted"   # the label of a control a row left out


@dataclass
class Grid:
    reference: str
    row_axis: str | None               # the control down the rows (None: one row)
    column_axes: list[str]             # the controls across (combined when several)
    row_values: list = field(default_factory=list)
    column_values: list = field(default_factory=list)   # tuples, one value per column axis
    cells: dict = field(default_factory=dict)           # (row value, column tuple) -> [score rows]


def _sort_key(value):
    """As fitted first, then numbers ascending, then text in alphabetical order."""
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def grid_layout(rows: list[dict]) -> list[Grid]:
    """Grids of the rows (dicts with `reference` and the control columns) that asked for a control,
    one per reference, in order of first appearance. The control with the most distinct values goes
    down the rows (ties: CONTROL_COLUMNS order); the others, combined, go across."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if any(r.get(c) is not None for c in CONTROL_COLUMNS):
            groups.setdefault(str(r.get("reference")), []).append(r)
    grids = []
    for reference, members in groups.items():
        distinct = {c: {r.get(c) for r in members} for c in CONTROL_COLUMNS}
        asked = [c for c in CONTROL_COLUMNS if distinct[c] != {None}]
        varying = [c for c in asked if len(distinct[c]) > 1] or asked
        varying.sort(key=lambda c: -len(distinct[c]))   # stable: ties keep CONTROL_COLUMNS order
        row_axis, column_axes = varying[0], varying[1:]
        grid = Grid(reference, row_axis, column_axes)
        grid.row_values = sorted(distinct[row_axis], key=_sort_key)
        columns = {tuple(r.get(c) for c in column_axes) for r in members}
        grid.column_values = sorted(columns, key=lambda t: [_sort_key(v) for v in t])
        for r in members:
            key = (r.get(row_axis), tuple(r.get(c) for c in column_axes))
            grid.cells.setdefault(key, []).append(r)
        grids.append(grid)
    return grids


def value_label(axis: str, value) -> str:
    if value is None:
        return AS_FITTED
    if axis == "expression":
        return "neutral" if str(value).lower() == "neutral" else Path(str(value)).name
    if isinstance(value, float):
        return f"{value:g}°"
    return str(value)


def _error_text(r: dict) -> str:
    bits = []
    for col, label, digits in (("pose_error_deg", "pose err", 1), ("light_error", "light err", 3)):
        v = r.get(col)
        if v is not None and math.isfinite(v):
            bits.append(f"{label} {v:.{digits}f}" + ("°" if col == "pose_error_deg" else ""))
    if not bits:
        bits.append(f"<span class='err'>{html.escape(r.get('error') or r.get('status') or 'no score')}</span>")
    return "<br>".join(bits)


def _cell_figure(r: dict, uri, thumb: int) -> str:
    """One image of a grid cell: the output, its condition (the pose / light it was asked to follow)
    as a small thumbnail beside it, the prompt and the errors under it."""
    src = uri(r.get("image"))
    img = (f'<img src="{src}" alt="{html.escape(str(r["id"]))}" width="{thumb}">' if src
           else '<div class="missing">no image</div>')
    cond = uri(r.get("condition"))
    if cond:
        img += f'<img class="cond" src="{cond}" alt="condition of {html.escape(str(r["id"]))}" width="{thumb // 2}">'
    prompt = f"<span class='prompt'>{html.escape(r.get('prompt') or '')}</span><br>" if r.get("prompt") else ""
    return f"<figure class='cell'>{img}<figcaption>{prompt}{_error_text(r)}</figcaption></figure>"


def grids_html(grids: list[Grid], uri, thumb: int) -> str:
    """The grids as HTML tables; `uri(path)` gives an image's data URI (or None)."""
    parts = []
    for g in grids:
        across = ", ".join(g.column_axes)
        head = "".join(f"<th>{html.escape(', '.join(value_label(a, v) for a, v in zip(g.column_axes, col)))}</th>"
                       for col in g.column_values) if g.column_axes else "<th></th>"
        body = []
        for rv in g.row_values:
            cells = []
            for col in g.column_values:
                members = g.cells.get((rv, col), [])
                figures = []
                for r in members:
                    figures.append(_cell_figure(r, uri, thumb))
                cells.append(f"<td>{''.join(figures)}</td>")
            body.append(f"<tr><th>{html.escape(value_label(g.row_axis, rv))}</th>{''.join(cells)}</tr>")
        corner = html.escape(f"{g.row_axis} \u2193 / {across} \u2192" if across else f"{g.row_axis} \u2193")
        parts.append(f"<section class='grid'><h3>{html.escape(Path(g.reference).name)}</h3>"
                     f"<table class='controls'><tr><th>{corner}</th>{head}</tr>{''.join(body)}</table></section>")
    return "".join(parts)
