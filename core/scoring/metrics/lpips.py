"""LPIPS v0.1 AlexNet, reference vs output (`..lpips`)."""

from __future__ import annotations

from ..loaded import model
from ..lpips import LpipsScorer
from ..registry import Column, Metric, register
from ..rows import mean_of


def score_lpips(rows, opts, progress) -> dict:
    scorer = model(LpipsScorer, opts.lpips_weights, opts.device, max(1, opts.batch_size // 2))
    idx = rows.with_pair()
    task = progress("LPIPS", len(idx))
    vals = scorer.distances([rows.ref[i] for i in idx], [rows.out[i] for i in idx])
    task(len(idx))
    col = rows.column("lpips")
    for j, i in enumerate(idx):
        col[i] = float(vals[j])
    return {"lpips": {"model": scorer.source, "mean": mean_of(col), "n": len(idx),
                      "scale": "LPIPS v0.1 AlexNet, reference vs output at 256 px (lower is closer)"}}


register(Metric(
    name="lpips", order=40, compute=score_lpips, keys=("lpips",),
    help="LPIPS distance, reference vs output (lower is closer), --lpips-weights",
    columns=(Column("lpips", label="LPIPS", digits=3),)))
