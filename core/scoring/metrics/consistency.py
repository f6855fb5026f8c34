"""Pose-RMSE and Light-RMSE: each output's 3D fit against its source's (target, else reference), or
against the pose / light the row asked for; rows of several people per person (`..person_scores`).
Definitions: `..consistency`."""

from __future__ import annotations

from ...errors import ImageError, RowError
from ...faces.matching import row_values
from ...manifest.people_layout import label, parse_layout, split_paths
from ...shading.consistency import ConsistencyScorer
from ...shading.controls import ControlRequest, requested_fit
from ...shading.light_presets import LightError
from ...shading.mesh import ReconstructorUnavailable
from .. import person_scores
from ..consistency import rmse
from ..inputs import FRAME_COLUMNS
from ..loaded import model
from ..plots import svg_histogram
from ..registry import Column, Metric, fmt, register, summed_counts
from ..rows import decode_all
from ..weights import MetricUnavailable


def score_consistency(rows, opts, progress) -> dict:
    try:
        scorer = model(ConsistencyScorer)
    except ReconstructorUnavailable as exc:
        raise MetricUnavailable(str(exc)) from None
    idx = rows.with_pair()
    targets = decode_all(sorted({rows.df["target_path"][i] for i in idx if rows.df["target_path"][i]}),
                          opts.workers)
    several = rows.with_people()  # rows of several people: after the others
    task = progress("Pose/Light", len(idx) + len(several))
    source_fits: dict[str, object] = {}     # references are shared by rows: fit each once

    def fit(key, fn, *args):
        if key not in source_fits:
            try:
                source_fits[key] = fn(*args)
            except RowError as exc:
                source_fits[key] = exc
        return source_fits[key]

    pose, light = rows.column("pose_error_deg"), rows.column("light_error")
    n_no_fit = n_requested = 0
    for i in idx:
        task(1)
        key = rows.df["target_path"][i] or rows.df["reference_path"][i]
        image = targets.get(key) if rows.df["target_path"][i] else rows.ref[i]
        if isinstance(image, ImageError):
            rows.fail(i, f"target: {image.reason}")
            continue
        side = max(rows.out[i].shape[:2])
        box = tuple(rows.df[c][i] for c in FRAME_COLUMNS)
        box = None if None in box else box
        src = fit(("source", key, side, box), scorer.fit_source, image, side, box)
        out = fit(("output", i), scorer.fit, rows.out[i])
        bad = [(who, f) for who, f in (("source", src), ("output", out)) if isinstance(f, RowError)]
        if bad:
            n_no_fit += 1
            rows.errors[i].append("; ".join(f"pose/light {who}: {f.reason}" for who, f in bad))
            continue
        # asked-for pose or light: the output is compared with the request, not with the photo
        request = ControlRequest.from_record(rows.df.row(i, named=True))
        if not request.empty:
            try:
                src = requested_fit(src, request)
            except LightError as exc:
                rows.errors[i].append(f"pose/light request: {exc.kind}: {exc}")
                continue
            n_requested += 1
        pose[i], light[i] = scorer.errors(out, src)
    # several people: each person's box of the output against their own source (person_scores.py)
    people_no_fit, people_requested = _people_consistency(rows, several, scorer, opts, task)
    n_no_fit += people_no_fit
    n_requested += people_requested
    return {"pose_light": {"pose_rmse_deg": rmse(pose), "light_rmse": rmse(light),
                           "n": sum(v is not None for v in pose), "n_no_fit": n_no_fit,
                           "n_against_request": n_requested,
                           "model": f"core.shading ({scorer.reconstructor} reconstruction, SH fit)"}}


def _people_consistency(rows, several: list[int], scorer, opts, task) -> tuple[int, int]:
    """Rows of several people: each person's box of the output against their own source
    (person_scores.py); fills the rows' pose / light columns. (rows without a fit, rows against a request)"""
    n_no_fit = n_requested = 0
    pose, light = rows.column("pose_error_deg"), rows.column("light_error")
    if several:
        per_pose, per_light = rows.column("people_pose_error_deg"), rows.column("people_light_error")
    people_targets = decode_all(sorted({p for i in several for p in split_paths(rows.df["target_path"][i]) if p}),
                                 opts.workers)
    for i in several:
        task(1)
        refs = rows.people_refs[i]
        targets_i = split_paths(rows.df["target_path"][i]) or [""] * len(refs)
        sources = [people_targets[t] if t else ref for t, ref in zip(targets_i, refs)]
        bad = [f"{label('target', k)}: {s.reason}" for k, s in enumerate(sources) if isinstance(s, ImageError)]
        if bad:
            rows.fail(i, "; ".join(bad))
            continue
        boxes = parse_layout(rows.df["layout"][i], len(refs))
        # each person's frame as generate recorded it (none: centre squares, as for paired images)
        frames = rows.df["people_frames"][i] if "people_frames" in rows.df.columns else None
        request = ControlRequest.from_record(rows.df.row(i, named=True))
        try:  # every person is rendered with the row's pose / light request: compared with it
            per_pose[i], per_light[i], problems = person_scores.output_consistency(
                scorer, sources, frames.to_list() if frames is not None else None, boxes, rows.out[i],
                None if request.empty else (lambda fit, request=request: requested_fit(fit, request)))
        except LightError as exc:
            rows.errors[i].append(f"pose/light request: {exc.kind}: {exc}")
            continue
        n_requested += 0 if request.empty else 1
        row = row_values([], per_pose[i], per_light[i])
        pose[i], light[i] = row["pose_error_deg"], row["light_error"]
        if problems:
            n_no_fit += 1
            rows.errors[i].append("; ".join(problems))
    return n_no_fit, n_requested


def merge(key: str, parts: list[dict], rows) -> dict:
    """The units' entries as one: counts summed, the RMSEs over every row's merged errors."""
    return {**summed_counts(parts), "pose_rmse_deg": rmse(rows.values.get("pose_error_deg", [])),
            "light_rmse": rmse(rows.values.get("light_error", []))}


def lines(key: str, m: dict) -> list:
    note = f"{m['n_no_fit']} rows without a 3D fit"
    if m.get("n_against_request"):
        note += f"; {m['n_against_request']} against the pose/light asked for"
    return [("pose_rmse_deg", fmt(m["pose_rmse_deg"], 2), str(m["n"]), note),
            ("light_rmse", fmt(m["light_rmse"]), str(m["n"]), "RMSE of norm-normalised SH; " + note)]


def plots(scores, summary: dict) -> list[str]:
    return [svg_histogram(scores[col].to_list(), title, lo=0.0)
            for col, title in (("pose_error_deg", "pose error (deg)"), ("light_error", "lighting error"))
            if col in scores.columns]


register(Metric(
    name="consistency", order=60, compute=score_consistency, keys=("pose_light",), lines=lines, plots=plots,
    merge=merge,
    help="Pose-RMSE (degrees) and Light-RMSE of the output's 3D face fit against its source or the request",
    columns=(Column("pose_error_deg", label="pose err °", digits=1), Column("light_error", label="light err"),
             Column("people_pose_error_deg", "floats", label="pose err °", digits=1, person=True),
             Column("people_light_error", "floats", label="light err", person=True))))
