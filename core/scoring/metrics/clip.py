"""CLIP-T (prompt vs output) and CLIP-I (reference vs output), one CLIP model for both (`..clip_score`)."""

from __future__ import annotations

from ..clip_score import ClipScorer, clip_i, clip_t
from ..loaded import model
from ..registry import Column, Metric, mean_lines, register
from ..rows import mean_of, model_dtype


def score_clip(rows, opts, progress) -> dict:
    scorer = model(ClipScorer, opts.clip_model, opts.device, opts.batch_size, model_dtype(opts))
    idx = rows.with_output()
    pair = [i for i in idx if rows.ref[i] is not None]
    keys, ref_images = rows.unique_refs(pair)
    task = progress("CLIP", len(idx) + len(keys))
    out_emb = scorer.image_embeddings([rows.out[i] for i in idx])
    txt_emb = scorer.text_embeddings([rows.df["prompt"][i] or "" for i in idx])
    task(len(idx))
    ref_emb = dict(zip(keys, scorer.image_embeddings([ref_images[k] for k in keys])))
    task(len(keys))
    ct, ci = rows.column("clip_t"), rows.column("clip_i")
    for j, i in enumerate(idx):
        ct[i] = float(clip_t(txt_emb[j], out_emb[j]))
        if rows.ref[i] is not None:
            ci[i] = float(clip_i(ref_emb[rows.df["reference_path"][i]], out_emb[j]))
    return {"clip_t": {"model": scorer.source, "mean": mean_of(ct), "n": sum(v is not None for v in ct),
                       "scale": "100 x cosine(prompt, output)", "precision": opts.precision},
            "clip_i": {"model": scorer.source, "mean": mean_of(ci), "n": sum(v is not None for v in ci),
                       "scale": "cosine(reference, output)", "precision": opts.precision}}


def lines(key: str, m: dict) -> list:
    return mean_lines(2 if key == "clip_t" else 4)(key, m)


register(Metric(
    name="clip", order=20, compute=score_clip, keys=("clip_t", "clip_i"), lines=lines, check=model_dtype,
    help="CLIP-T (100 x cosine of prompt and output) and CLIP-I (cosine of reference and output), --clip-model",
    columns=(Column("clip_t", label="CLIP-T", digits=1), Column("clip_i", label="CLIP-I", digits=3))))
