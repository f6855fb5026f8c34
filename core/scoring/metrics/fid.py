"""FID: the outputs against the set of distinct references, one number per run (`..fid`)."""

from __future__ import annotations

from ..fid import FidScorer
from ..registry import Metric, fmt, register


def score_fid(rows, opts, progress) -> dict:
    scorer = FidScorer(opts.fid_weights, opts.device, max(1, opts.batch_size // 2))
    idx = rows.with_output()
    keys, ref_images = rows.unique_refs([i for i in range(rows.n) if rows.ref[i] is not None])
    task = progress("FID", len(idx) + len(keys))
    value = scorer.fid([rows.out[i] for i in idx], [ref_images[k] for k in keys])
    task(len(idx) + len(keys))
    return {"fid": {"model": scorer.source, "value": value, "n_outputs": len(idx), "n_references": len(keys),
                    "note": "biased upward below 2048 images per set; compare runs of equal sizes"}}


def lines(key: str, m: dict) -> list:
    return [(key, fmt(m["value"], 2), f"{m['n_outputs']} vs {m['n_references']}", m["note"])]


register(Metric(
    name="fid", order=50, compute=score_fid, keys=("fid",), lines=lines, scope="set",
    help="Frechet Inception Distance of the outputs to the references (one number per run), --fid-weights"))
