"""report.html: one self-contained page a person reads to judge a run.

Images are embedded as JPEG data URIs (thumbnails), plots are inline SVG generated here, no
script or stylesheet is fetched. Groups (one per reference id) show reference | target (when the
row has one: the pose and lighting it asked for) | condition | outputs with their scores; the worst
groups come first (failures, then no face, then the lowest identity similarity). Rows that asked
for a pose, expression or light also appear in one grid per reference (control_grid.py). A small
inline script marks images that failed to decode.
"""

from __future__ import annotations

import html
import math

import numpy as np
import polars as pl

from ..errors import ImageError
from ..html_page import IMAGE_CHECK, jpeg_data_uri
from ..images import load_rgb
from ..manifest.people_layout import split_paths
from .control_grid import grid_layout, grids_html
from .registry import columns, registered
from .summary_table import metric_lines

THUMB = 224


def thumbnail_uri(image: np.ndarray, size: int = THUMB) -> str:
    return jpeg_data_uri(image, size)


def _primary_facesim(scores: pl.DataFrame) -> str | None:
    for col in ("facesim_arcface", "facesim_dlib"):
        if col in scores.columns:
            return col
    return None


def _severity(row: dict, primary: str | None) -> tuple:
    rank = {"failed": 0, "no_face": 1}.get(row["status"], 2)
    value = row.get(primary) if primary else None
    return (rank, -math.inf if value is None else value)


def _figure(uri: str | None, caption: str, cls: str = "") -> str:
    body = (f'<img src="{uri}" alt="{html.escape(caption)}">' if uri
            else '<div class="missing">no image</div>')
    return f'<figure class="{cls}">{body}<figcaption>{caption}</figcaption></figure>'


def _scores_caption(row: dict) -> str:
    bits = [f"<b>{html.escape(str(row['id']))}_{row['k']}</b> <span class='st {row['status']}'>"
            f"{html.escape(row['status'])}</span>"]
    for col, label, digits in score_columns():
        if row.get(col) is not None:
            bits.append(f"{label} {row[col]:.{digits}f}")
    bits += _people_lines(row)
    if row.get("accepted") is not None:  # quality gate: kept after N attempts, passed or why not
        tries = f"{row['attempts']} attempt{'s' if row['attempts'] != 1 else ''}"
        verdict = "accepted" if row["accepted"] else f"rejected: {html.escape(row.get('rejection_reason') or '')}"
        bits.append(f"<span class='gate{'' if row['accepted'] else ' rej'}'>{verdict} ({tries})</span>")
    if row.get("error"):
        bits.append(f"<span class='err'>{html.escape(row['error'])}</span>")
    return "<br>".join(bits)


def _people_lines(row: dict) -> list[str]:
    """One line per person of a row of several people: their FaceSim, pose and light errors."""
    present = [(row[c], lab, d) for c, lab, d in score_columns(person=True) if row.get(c) is not None]
    lines = []
    for k in range(max((len(v) for v, _, _ in present), default=0)):
        parts = [f"{lab} {v[k]:.{d}f}" if k < len(v) and v[k] is not None else f"{lab} –" for v, lab, d in present]
        lines.append(f"<span class='person'>person {k + 1}: {', '.join(parts)}</span>")
    return lines


def score_columns(person: bool = False) -> list[tuple[str, str, int]]:
    """(column, label, digits) of the per-row columns a row's caption shows (`person`: those shown on
    each person's line), as the metrics declared them (registry.Column)."""
    return [(c.name, c.label, c.digits) for c in columns() if c.label is not None and c.person == person]


def _plots(scores: pl.DataFrame, summary: dict) -> list[str]:
    """The histograms each metric draws (FaceSim per backend, pose and lighting errors, ...)."""
    plots = [svg for m in registered() if m.plots is not None for svg in m.plots(scores, summary)]
    if not plots:
        plots.append("<p>No per-image identity or consistency scores to plot.</p>")
    return plots


def _sections(ordered: list[list[dict]], uri) -> list[str]:
    """One section per manifest id: its references (and targets), condition and outputs."""
    sections = []
    for g in ordered:
        first = g[0]
        references = split_paths(first["reference"]) if first.get("layout") else [first["reference"]]
        cells = [_figure(uri(path), f"reference[{k + 1}]" if len(references) > 1 else "reference", "ref")
                 for k, path in enumerate(references)]
        if first.get("target"):  # the pose and lighting this row asked for (one per person)
            targets = split_paths(first["target"]) if first.get("layout") else [first["target"]]
            cells += [_figure(uri(path), f"target[{k + 1}]" if len(targets) > 1 else "target", "target")
                      for k, path in enumerate(targets) if path]
        cells.append(_figure(uri(first.get("condition")), "condition", "cond"))
        cells += [_figure(uri(r["image"]), _scores_caption(r), f"out {r['status']}") for r in g]
        prompt = html.escape(first.get("prompt") or "")
        sections.append(f"<section><h3>{html.escape(str(first['id']))}</h3><p class='prompt'>{prompt}</p>"
                        f"<div class='row'>{''.join(cells)}</div></section>")
    return sections


def _gating_part(gating: dict | None) -> str:
    """The quality gate's outcome: images accepted / rejected, attempts, rejection reasons."""
    if not gating:
        return ""
    reasons = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in gating["reasons"].items())
    table = (f"<table class='gating'><tr><th>rejection reason</th><th>images</th></tr>{reasons}</table>"
             if reasons else "")
    return (f"<h2>Quality gate</h2><p>{gating['accepted']} of {gating['gated']} images accepted, "
            f"{gating['rejected']} kept as the best of their attempts but rejected; {gating['attempts']} "
            f"attempts in all.</p>{table}")


def render_report(scores: pl.DataFrame, summary: dict, decoded: dict) -> str:
    """The whole page as a string. `decoded` maps image paths to arrays (or errors) already read."""
    primary = _primary_facesim(scores)
    cache: dict[str, str | None] = {}

    def uri(path: str | None) -> str | None:
        if not path:
            return None
        if path not in cache:
            img = decoded.get(path)
            if img is None:
                try:
                    img = load_rgb(path)
                except ImageError:
                    img = None
            cache[path] = thumbnail_uri(img) if isinstance(img, np.ndarray) else None
        return cache[path]

    rows = scores.to_dicts()
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r["id"]), []).append(r)
    for g in groups.values():
        g.sort(key=lambda r: _severity(r, primary))
    ordered = sorted(groups.values(), key=lambda g: _severity(g[0], primary))

    plots = _plots(scores, summary)

    table = "".join(f"<tr class='{'na' if v == 'unavailable' else ''}'><td>{html.escape(a)}</td>"
                    f"<td>{html.escape(v)}</td><td>{html.escape(n)}</td><td>{html.escape(note)}</td></tr>"
                    for a, v, n, note in metric_lines(summary))
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(summary["status_counts"].items()))

    grids = grid_layout(rows)
    grid_part = (f"<h2>Control grids</h2><p>One table per reference whose rows asked for a pose, "
                 f"expression or light; errors are against what was asked.</p>{grids_html(grids, uri, THUMB // 2)}"
                 if grids else "")

    sections = _sections(ordered, uri)

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fmu score report</title>
<style>
body{{font-family:sans-serif;margin:20px;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}} tr.na td{{color:#a60}}
.plots{{display:flex;flex-wrap:wrap;gap:16px}} .row{{display:flex;flex-wrap:wrap;gap:10px}}
figure{{margin:0;width:{THUMB}px;font-size:12px}} figure img{{max-width:{THUMB}px;display:block}}
figure.ref img{{outline:3px solid #3b7dd8}} figure.target img{{outline:3px solid #8a5cc7}}
.missing{{width:{THUMB}px;height:80px;background:#eee;
display:flex;align-items:center;justify-content:center;color:#888}}
.st.failed{{color:#c00}} .st.no_face{{color:#c60}} .err{{color:#c00}} .person{{color:#335}} .gate.rej{{color:#c60}}
section{{border-top:1px solid #ddd;padding-top:6px;margin-top:10px}} .prompt{{color:#555;font-size:13px}}
#img-check{{font-size:12px;color:#666}}
table.controls td,table.controls th{{vertical-align:top}}
figure.cell{{width:{THUMB // 2 + THUMB // 4 + 4}px;display:inline-block}}
figure.cell img{{display:inline-block;vertical-align:top;margin-right:2px}}
</style></head><body>
<h1>fmu score</h1>
<p>{summary['n_ok']}/{summary['n_requested']} rows fully scored; rows by status: {html.escape(counts)}.
An output with no detected face counts as 0 in the strict FaceSim mean.</p>
<table><tr><th>metric</th><th>value</th><th>n</th><th>note</th></tr>{table}</table>
{_gating_part(summary.get("gating"))}
<h2>Distributions</h2><div class="plots">{''.join(plots)}</div>
{grid_part}
<h2>Rows, worst first</h2>
{''.join(sections)}
{IMAGE_CHECK}
</body></html>
"""
