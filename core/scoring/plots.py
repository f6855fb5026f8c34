"""The report's plots: inline SVG histograms, drawn here (no plotting library)."""

from __future__ import annotations

import html
import math


def histogram_counts(values: list[float], lo: float, hi: float, bins: int) -> list[int]:
    """Counts per equal-width bin over [lo, hi]; values outside are clamped into the end bins."""
    counts = [0] * bins
    for v in values:
        j = int((v - lo) / (hi - lo) * bins) if hi > lo else 0
        counts[min(bins - 1, max(0, j))] += 1
    return counts


def svg_histogram(values: list[float], title: str, lo: float | None = None, hi: float | None = None,
                  bins: int = 20, left_out: tuple[str, int] | None = None, x_label: str | None = None) -> str:
    """An inline SVG bar chart of `values`, both axes labelled (x: `x_label`, default `title`;
    y: images, with the fullest bin's count at its top). `left_out` = (what, count) of outputs that
    have no value (e.g. ("no face", 3)): said in a line under the axis, never drawn as a bar, since
    a bar beside the bins would read as one more score range."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    lo = min(vals, default=0.0) if lo is None else lo
    hi = max(vals, default=1.0) if hi is None else hi
    if hi <= lo:
        hi = lo + 1.0
    counts = histogram_counts(vals, lo, hi, bins)
    w, h, pad = 420, 160, 40
    top = max(counts + [1])
    bw = (w - 2 * pad) / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 56}" role="img">',
             f'<title>{html.escape(title)}</title>',
             f'<text x="{pad}" y="14" font-size="13">{html.escape(title)} (n={len(vals)})</text>']
    for j, c in enumerate(counts):
        bh = (h - 30) * c / top
        parts.append(f'<rect x="{pad + j * bw:.1f}" y="{h - bh:.1f}" width="{max(bw - 1, 1):.1f}" '
                     f'height="{bh:.1f}" fill="#3b7dd8"><title>{c}</title></rect>')
    parts.append(f'<line x1="{pad}" y1="{h}" x2="{w - pad}" y2="{h}" stroke="#333"/>')
    parts.append(f'<line x1="{pad}" y1="30" x2="{pad}" y2="{h}" stroke="#333"/>')
    parts.append(f'<text x="{pad - 4}" y="34" font-size="10" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{pad - 4}" y="{h}" font-size="10" text-anchor="end">0</text>')
    parts.append(f'<text x="12" y="{(h + 30) // 2}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(h + 30) // 2})">images</text>')
    parts.append(f'<text x="{pad}" y="{h + 14}" font-size="10">{lo:.3g}</text>')
    parts.append(f'<text x="{w - pad}" y="{h + 14}" font-size="10" text-anchor="end">{hi:.3g}</text>')
    parts.append(f'<text x="{w // 2}" y="{h + 28}" font-size="11" text-anchor="middle">'
                 f'{html.escape(x_label or title)}</text>')
    if left_out and left_out[1]:
        parts.append(f'<text x="{pad}" y="{h + 46}" font-size="11" fill="#c60" class="left-out">not plotted: '
                     f'{left_out[1]} with {html.escape(left_out[0])} (0 in the strict mean)</text>')
    parts.append("</svg>")
    return "".join(parts)
