"""Scores of an image with several people: which face is whom, and each person's values.

Faces detected in the output are matched to the references by an optimal assignment on identity
similarity (scipy's `linear_sum_assignment`, maximising the total): no two people share a face,
and with fewer faces than people the people left without one are named. Pose and light are taken
per person on the output's crop of that person's box, against that person's condition (as
`fmu generate` rendered it); `fmu generate` and `fmu score` both use these functions, so they give
the same numbers.

Row values from the per-person ones: `id_similarity` = the mean over the people (null when one is
missing), `id_similarity_min` = the worst; `pose_error_deg` / `light_error` = the RMS over the
people fitted, so the run's Pose-/Light-RMSE stays an RMS over faces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..boxes import Box, pixel_box
from ..errors import RowError
from ..manifest.people import label


def assign(similarity) -> list[int | None]:
    """For each person (row of `similarity`, people x faces), the face (column) the optimal
    assignment gives them; None for the people left over when there are fewer faces."""
    similarity = np.asarray(similarity, dtype=np.float64)
    match: list[int | None] = [None] * similarity.shape[0]
    if similarity.size:
        for person, face in zip(*linear_sum_assignment(similarity, maximize=True)):
            match[int(person)] = int(face)
    return match


@dataclass
class PeopleIdentity:
    values: list[float | None]     # per person, in reference order (None: no face for them)
    reason: str | None             # why some person has no value
    match: list[int | None]        # the face each person got


def identity_scores(backend, references: list[np.ndarray], faces: list[np.ndarray]) -> PeopleIdentity:
    """Each person's similarity (backend's scale) to the face the optimal assignment gives them,
    among the output's detected faces (their embeddings `faces`)."""
    n = len(references)
    if not faces:
        return PeopleIdentity([None] * n, "no_face: no face detected in the output", [None] * n)
    table = np.array([[backend.similarity(ref, face) for face in faces] for ref in references])
    match = assign(table)
    values = [None if j is None else float(table[i, j]) for i, j in enumerate(match)]
    missing = [label("reference", i) for i, j in enumerate(match) if j is None]
    reason = None if not missing else (f"missing: no face in the output for {', '.join(missing)} "
                                       f"({len(faces)} face(s) for {n} people)")
    return PeopleIdentity(values, reason, match)


def box_crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The part of an output inside a person's box."""
    height, width = image.shape[:2]
    left, top, right, bottom = pixel_box(box, width, height)
    return image[top:bottom, left:right]


def row_values(similarities: list[float | None], poses: list[float | None], lights: list[float | None]) -> dict:
    """The row's scalar values from the per-person ones (see the module docstring)."""
    found = [v for v in similarities if v is not None]
    complete = bool(similarities) and len(found) == len(similarities)
    return {"id_similarity": float(np.mean(found)) if complete else None,
            "id_similarity_min": min(found) if complete else None,
            "pose_error_deg": _rms(poses), "light_error": _rms(lights)}


def _rms(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.sqrt(np.mean(np.square(vals)))) if vals else None


# -- fmu score: the same values from a run folder --------------------------------------------------

def output_identity(backend, references: list[np.ndarray], output: np.ndarray) -> tuple[PeopleIdentity, int, bool]:
    """(the people's identity scores, number of faces, whether every person's face is a match
    by the backend's threshold) of an output against the people's reference embeddings."""
    faces = backend.detect(output)
    found = identity_scores(backend, references, [f.embedding for f in faces])
    all_match = found.reason is None and all(backend.is_match(ref, faces[j].embedding)
                                             for ref, j in zip(references, found.match))
    return found, len(faces), all_match


def output_consistency(scorer, sources: list[np.ndarray], frames: list | None, boxes: list[Box],
                       output: np.ndarray, adjust=None) -> tuple[list[float | None], list[float | None], list[str]]:
    """Per person: pose and light errors of the output's crop of their box against their source
    (target, else reference) fitted in their frame at their box's size, as generate's condition
    was; and the problems, naming the person. `adjust(fit)`: the fit a row's pose / light request
    makes of each source fit (core.shading.controls.requested_fit), as generate rendered it."""
    height, width = output.shape[:2]
    poses: list[float | None] = []
    lights: list[float | None] = []
    problems: list[str] = []
    for i, (source, box) in enumerate(zip(sources, boxes)):
        left, top, right, bottom = pixel_box(box, width, height)
        frame = tuple(frames[i]) if frames else None
        which = "source"
        try:
            fit_source = scorer.fit_source(source, max(right - left, bottom - top), frame)
            if adjust is not None:
                fit_source = adjust(fit_source)
            which = "output"
            fit_output = scorer.fit(box_crop(output, box))
        except RowError as exc:
            problems.append(f"pose/light {label('reference', i)} {which}: {exc.reason}")
            poses.append(None)
            lights.append(None)
            continue
        pose, light = scorer.errors(fit_output, fit_source)
        poses.append(pose)
        lights.append(light)
    return poses, lights, problems
