"""DINO: cosine of the CLS features of reference and output (`..dino`)."""

from __future__ import annotations

from ..dino import DinoScorer, dino_similarity
from ..loaded import model
from ..registry import Column, Metric, register
from ..rows import mean_of, model_dtype


def score_dino(rows, opts, progress) -> dict:
    scorer = model(DinoScorer, opts.dino_model, opts.device, opts.batch_size, model_dtype(opts))
    idx = rows.with_pair()
    keys, ref_images = rows.unique_refs(idx)
    task = progress("DINO", len(idx) + len(keys))
    out_emb = scorer.embeddings([rows.out[i] for i in idx])
    ref_emb = dict(zip(keys, scorer.embeddings([ref_images[k] for k in keys])))
    task(len(idx) + len(keys))
    col = rows.column("dino")
    for j, i in enumerate(idx):
        col[i] = float(dino_similarity(ref_emb[rows.df["reference_path"][i]], out_emb[j]))
    return {"dino": {"model": scorer.source, "mean": mean_of(col), "n": len(idx), "scale": "cosine of CLS features",
                     "precision": opts.precision}}


register(Metric(
    name="dino", order=30, compute=score_dino, keys=("dino",), check=model_dtype,
    help="cosine of DINO CLS features, reference vs output, --dino-model",
    columns=(Column("dino", label="DINO", digits=3),)))
