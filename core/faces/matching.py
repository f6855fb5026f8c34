"""Who is whom in an image of several people, shared by `fmu generate` (core/runner/people_row.py) and
`fmu score` (core/scoring/person_scores.py), so both give the same numbers.

Faces detected in the output are matched to the references by an optimal assignment on identity
similarity (scipy's `linear_sum_assignment`, maximising the total): no two people share a face,
and with fewer faces than people the people left without one are named. Row values from the
per-person ones: `id_similarity` = the mean over the people (null when one is missing),
`id_similarity_min` = the worst; `pose_error_deg` / `light_error` = the RMS over the people
fitted, so the run's Pose-/Light-RMSE stays an RMS over faces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..boxes import Box, pixel_box
from ..manifest.people_layout import label


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
