"""`fmu generate` for a row of several people (core/manifest/people_layout.py): per person the face
analysis and the condition, one request with everyone's identity, then per-person scores.

Each person goes through what a one-person row does: the face cache (`reference[k]` / `target[k]`
in the reasons, 1-based), the condition in their own frame (the reference's face frame, or the
target's), rendered by the worker's `render` (ConditionProvider.get: the same cache and renderer,
and whatever pose or light controls the row asks for) at their box's size and placed in the box
(core/shading/compose.py). The model keeps each identity to its box (core/model/masked_identity.py).
Scores: core/scoring/person_scores.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..boxes import pixel_box
from ..digests import file_digest, file_stamp
from ..errors import row_reason
from ..faces.cache import FaceCache
from ..faces.matching import box_crop, identity_scores, row_values
from ..manifest.people_layout import SEPARATOR, Person, label
from ..model.masked_identity import PeopleInput
from ..model.pipeline import Request
from ..model.settings import with_prefix
from ..shading.compose import compose, place


class PersonFailed(Exception):
    """One person's input cannot be used: the row fails with `reason` (naming the person)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class PeopleCondition:
    condition: np.ndarray          # (H, W) the composed condition (conditions/<id>.png)
    canvases: np.ndarray           # (n, H, W) each person's render in their box, 0 elsewhere
    results: list                  # each person's ShadingResult (pose, sh, frame)
    # a row of several people has no one frame: results.parquet keeps each person's in `people_frames`
    frame: tuple = field(default=(None, None, None))


@dataclass
class PreparedPeople:
    request: Request
    analyses: list                 # each person's FaceAnalysis
    condition: PeopleCondition | None


def _attempt(what: str, kind: str, fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001  one person's bad input fails the row, named
        raise PersonFailed(f"{what} {row_reason(exc, kind)}") from None


def record_sources(record: dict, people: tuple[Person, ...]) -> None:
    """The stamps and sha256 of every person's files, `|`-joined like the paths (results.py
    checks them per part on resume); an empty part for a person without a target."""
    for column in ("reference", "target"):
        paths = [getattr(p, column) for p in people]
        if not any(paths):
            continue
        stamps = [(file_stamp(p) or "") if p else "" for p in paths]  # before the bytes, as worker.py does
        digests = [_attempt(label(column, i), "analysis_failed", file_digest, p) if p else ""
                   for i, p in enumerate(paths)]
        record[f"{column}_stamp"], record[f"{column}_sha256"] = SEPARATOR.join(stamps), SEPARATOR.join(digests)


def prepare(job, record: dict, cache: FaceCache, render: Callable | None, wants_landmarks: bool,
            multi_face: str, prefix: str | None) -> PreparedPeople:
    """Analyse every person of `job`'s row and build its request; raises PersonFailed.
    `render(reference, target, width, height, landmarks)`: one person's condition at their box's
    size (None: no 3D channel)."""
    people = job.row.people
    record["layout"] = job.row.layout
    analyses = [_attempt(label("reference", i), "analysis_failed", cache.analyse_file, p.reference, multi_face)
                for i, p in enumerate(people)]
    record_sources(record, people)
    condition = None
    if render is not None:
        width, height = job.settings.width, job.settings.height
        boxes = [pixel_box(p.box, width, height) for p in people]
        results = []
        for i, (person, analysis, (left, top, right, bottom)) in enumerate(zip(people, analyses, boxes)):
            landmarks = analysis.landmarks
            if person.target is not None and wants_landmarks:  # the frame is cut around the target's face
                landmarks = _attempt(label("target", i), "analysis_failed", cache.analyse_file,
                                     person.target, cache.pick).landmarks
            where = label("target", i) if person.target is not None else label("reference", i)
            results.append(_attempt(f"{where} shading", "shading_failed", render, person.reference,
                                    person.target, right - left, bottom - top, landmarks))
        canvases = place([r.condition for r in results], boxes, width, height)
        condition = PeopleCondition(compose(canvases), canvases, results)
    people_input = PeopleInput(embeddings=np.stack([a.embedding for a in analyses]),
                               crops=[a.crop for a in analyses], boxes=tuple(p.box for p in people),
                               conditions=condition.canvases if condition is not None else None)
    request = Request(prompt=with_prefix(job.row.prompt, prefix), id_embedding=analyses[0].embedding,
                      face_crop=analyses[0].crop, seed=job.seed, negative_prompt=job.row.negative_prompt,
                      condition=condition.condition if condition is not None else None, people=people_input)
    return PreparedPeople(request, analyses, condition)


def scores(backend, conditions, people: tuple[Person, ...], analyses: list, condition: PeopleCondition | None,
           image: np.ndarray, no_condition: str) -> dict:
    """The per-person values of one output (lists in reference order) and the row's values
    from them (core/scoring/person_scores.py); `no_condition`: why there is no 3D condition, if none."""
    found = identity_scores(backend, [a.embedding for a in analyses], [f.embedding for f in backend.detect(image)])
    values = {"people_id_similarity": found.values, "id_similarity_reason": found.reason}
    poses: list[float | None] = []
    lights: list[float | None] = []
    if condition is None:
        values["consistency_reason"] = f"no_condition: no 3D condition ({no_condition})"
    else:
        problems = []
        for i, (person, result) in enumerate(zip(people, condition.results)):
            fit = conditions.consistency(result, box_crop(image, person.box))
            poses.append(fit.get("pose_error_deg"))
            lights.append(fit.get("light_error"))
            if fit.get("consistency_reason"):
                problems.append(f"{label('reference', i)}: {fit['consistency_reason']}")
        values.update(people_pose_error_deg=poses, people_light_error=lights,
                      people_frames=[[int(v) for v in r.frame] for r in condition.results],
                      consistency_reason="; ".join(problems) or None)
    return {**values, **row_values(found.values, poses, lights)}
