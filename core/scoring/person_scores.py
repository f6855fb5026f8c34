"""Scores of an image with several people, from a run folder (`fmu score`): each person's
identity among the output's faces, and pose and light per person on the output's crop of that
person's box, against that person's condition (as `fmu generate` rendered it). The matching and
the row values are core/faces/matching.py's, which `fmu generate` uses too, so both give the
same numbers.
"""

from __future__ import annotations

import numpy as np

from ..boxes import Box, pixel_box
from ..errors import RowError
from ..faces.matching import PeopleIdentity, box_crop, identity_scores
from ..manifest.people_layout import label


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
