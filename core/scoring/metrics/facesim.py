"""FaceSim, per face backend: the output's face against the reference's (several people: faces
matched to the references, `..person_scores`). Definition, columns and counting: `..facesim`."""

from __future__ import annotations

from ...devices import face_device
from ...faces import BACKENDS, get_backend
from ...faces.matching import row_values
from ...manifest.people_layout import label, split_paths
from .. import facesim, person_scores
from ..face_batch import face_embeddings
from ..loaded import model
from ..plots import svg_histogram
from ..registry import Column, Metric, fmt, register, summed_counts, weighted_mean
from ..weights import MetricUnavailable


def score_facesim(rows, opts, progress, backend: str) -> dict:
    col = facesim.column_for(backend)
    try:
        face_backend = model(get_backend, backend, device=face_device(opts.device), models_dir=opts.face_models,
                                   det_size=opts.det_size)
    except Exception as exc:  # noqa: BLE001  missing pack, missing onnx files, ...: the metric is unavailable
        raise MetricUnavailable(f"face backend {backend!r}: {exc}") from None
    idx = rows.with_pair()
    keys, ref_images = rows.unique_refs(idx)
    task = progress(f"FaceSim ({backend})", len(keys) + len(idx) + len(rows.with_people()))
    # references and outputs in one call: one batch pipeline (and one worker pool) for both
    found = face_embeddings(face_backend, [ref_images[k] for k in keys] + [rows.out[i] for i in idx],
                            opts.batch_size, opts.workers, task)
    ref_faces, out_faces = dict(zip(keys, found[:len(keys)])), found[len(keys):]
    values, matches, nfaces = rows.column(col), rows.column(f"{col}_match"), rows.column(f"faces_{backend}")
    strict_values, found = [], []
    for i, out in zip(idx, out_faces):
        ref = ref_faces[rows.df["reference_path"][i]]
        nfaces[i] = out.num_faces
        if not ref.found:
            rows.fail(i, f"reference: no_face ({backend})")
            continue
        if not out.found:
            rows.fail(i, f"output: no_face ({backend})", status="no_face")
            matches[i] = False
            strict_values.append(None)
            found.append(False)
            continue
        values[i] = float(face_backend.similarity(ref.embedding, out.embedding))
        matches[i] = bool(face_backend.is_match(ref.embedding, out.embedding))
        strict_values.append(values[i])
        found.append(True)
    several = rows.with_people()
    _several_people(rows, several, face_backend, backend, idx, task, strict_values, found)
    stats = facesim.facesim_summary(strict_values, found)
    n_match = sum(1 for i in idx + several if matches[i])
    stats.update(scale=facesim.SCALE.get(backend, backend), model=face_backend.identity(),
                 match_rate_strict=(n_match / stats["n"]) if stats["n"] else None)
    if several:
        stats["n_people_rows"] = len(several)
    return {col: stats}


def _several_people(rows, several: list[int], face_backend, backend: str, idx: list[int], task,
                    strict_values: list, found: list) -> None:
    """Rows of several people: faces matched to the references (person_scores.py); the row's value is
    their mean, `<col>_min` the worst. Appends to the strict values and found flags."""
    if not several:
        return
    col = facesim.column_for(backend)
    values, matches, nfaces = rows.column(col), rows.column(f"{col}_match"), rows.column(f"faces_{backend}")
    per_person, worst = rows.column(f"{col}_people"), rows.column(f"{col}_min")
    for i in idx:
        worst[i] = values[i]  # one person: the worst is the one
    ref_faces = {}
    for i in several:
        task(1)
        paths = split_paths(rows.df["reference_path"][i])
        for path, image in zip(paths, rows.people_refs[i]):
            if path not in ref_faces:
                ref_faces[path] = face_backend.best_face(image)
        lost = [label("reference", k) for k, p in enumerate(paths) if not ref_faces[p].found]
        if lost:
            rows.fail(i, f"{', '.join(lost)}: no_face ({backend})")
            continue
        who, nfaces[i], matches[i] = person_scores.output_identity(
            face_backend, [ref_faces[p].embedding for p in paths], rows.out[i])
        row = row_values(who.values, [], [])
        per_person[i], values[i], worst[i] = who.values, row["id_similarity"], row["id_similarity_min"]
        if who.reason:
            rows.fail(i, f"output: {who.reason} ({backend})", status="no_face")
        strict_values.append(values[i])
        found.append(who.reason is None)


def merge(key: str, parts: list[dict], rows) -> dict:
    """The units' entries as one: counts summed, each mean weighted by the count it is over."""
    out = summed_counts(parts)
    out.update(mean_strict=weighted_mean(parts, "mean_strict"),
               mean_detected=weighted_mean(parts, "mean_detected", "n_detected"),
               match_rate_strict=weighted_mean(parts, "match_rate_strict"))
    return out


def lines(key: str, m: dict) -> list:
    return [(key, f"{fmt(m['mean_strict'])} strict / {fmt(m['mean_detected'])} detected-only",
             f"{m['n']} ({m['n_no_face']} no face)",
             f"match rate {fmt(m.get('match_rate_strict'), 3)}; {m.get('scale', '')}")]


def plots(scores, summary: dict) -> list[str]:
    """A histogram per backend's column, no-face outputs said under it."""
    out = []
    for col in facesim.COLUMN.values():
        if col in scores.columns:
            m = summary["metrics"].get(col, {})
            lo, hi = (-1.0, 1.0) if col == "facesim_arcface" else (-0.2, 1.0)
            out.append(svg_histogram(scores[col].to_list(), f"{col} (detected faces)", lo, hi,
                                     left_out=("no face", m.get("n_no_face", 0))))
    return out


def _columns() -> tuple[Column, ...]:
    names = [(b, facesim.column_for(b)) for b in sorted(BACKENDS, key=lambda b: facesim.column_for(b))]
    label_of = {"facesim_arcface": "FaceSim ArcFace", "facesim_dlib": "FaceSim dlib"}
    return (*(Column(col, label=label_of.get(col, col), digits=3) for _, col in names),
            *(Column(f"{col}_match", "bool") for _, col in names),
            *(Column(f"faces_{b}", "int") for b, _ in names),
            *(Column(f"{col}_min") for _, col in names),
            *(Column(f"{col}_people", "floats", label=label_of.get(col, col), person=True) for _, col in names))


register(Metric(
    name="facesim", order=10, compute=score_facesim,
    help="identity similarity of the output's face to the reference's, per face backend (--face-backend)",
    keys=tuple(facesim.column_for(b) for b in BACKENDS), columns=_columns(), lines=lines, plots=plots, merge=merge,
    variants=lambda opts: [(f"facesim_{b}", (facesim.column_for(b),), {"backend": b}) for b in opts.face_backends]))
