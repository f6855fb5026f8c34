"""Expression control on the mediapipe mesh: another face's expression onto the reference's shape,
or the reference's own face with its mouth shut (`neutral`).

mediapipe gives 478 points and no model that separates identity from expression (no FLAME-style
bases, no neutral template in the 0.10.21 wheel). So the split is made by anatomy, in the head frame
(pose removed with `pose.head_rotation`, the same frame the pose is read in):
- shape = the rigid landmarks: the ones the head pose is built from (eye corners, temples, ear-level
  contour, cheekbones, nose wings, orbital rims) plus the nose ridge and the forehead. They barely
  move with expression, so they fix position, size and orientation of a face.
- expression = the non-rigid rest: lips and jaw (everything below the mouth corners), eyelids, irises
  and brows, with a falloff around them.
`transfer_expression` aligns the expression face onto the reference's rigid landmarks with a
similarity transform (Procrustes: rotation, scale, shift) and takes its non-rigid points, blended in
by those weights; the rigid landmarks stay exactly the reference's, so its pose and face shape are
kept (the transferred region does carry some of the other face's lip and jaw shape: without a
neutral template the two cannot be told apart).

`neutral_expression` closes the mouth: the jaw (points below the upper lip) turns about the
jaw hinge, the axis through the ear-level contour points, until the inner lips line up seen from
it, then slides the rest of the way until they meet. Other
expression (a smile's raised corners, raised brows) stays: there is no neutral to reset it to.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
from scipy.linalg import orthogonal_procrustes

from ..images import crop_square
from .mesh import FaceMesh
from .pose import ORBITALE_PROXY, PORION_PROXY, SYMMETRIC_PAIRS, expression_descriptor
from .reconstruct import reconstruct
from .topology import mesh_connections

NEUTRAL = "neutral"
BROWS = {70, 300, 105, 334}                     # in SYMMETRIC_PAIRS, but they move with expression
NOSE_RIDGE = (168, 6, 197, 195, 5, 4, 1)
FOREHEAD = (10, 151, 9, 109, 338, 67, 297)
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
MOUTH_CORNERS = (61, 291)
NOSE_BASE = 2
FALLOFF = 0.35          # width of the blend around the expressive regions, in face radii (RMS)
EXPRESSION_SIZE = 512   # the expression face is reconstructed at this side
EXPRESSION_MARGIN = 1.6  # crop side / landmark-box side for that second look


@lru_cache(maxsize=1)
def rigid_landmarks() -> np.ndarray:
    pairs = [i for pair in SYMMETRIC_PAIRS for i in pair if i not in BROWS]
    return np.array(sorted({*pairs, *sum(PORION_PROXY, ()), *ORBITALE_PROXY, *NOSE_RIDGE, *FOREHEAD}))


@lru_cache(maxsize=1)
def expressive_landmarks() -> np.ndarray:
    sets = [mesh_connections(name) for name in ("LIPS", "LEFT_EYE", "RIGHT_EYE", "LEFT_EYEBROW", "RIGHT_EYEBROW",
                                                 "LEFT_IRIS", "RIGHT_IRIS")]
    points = {v for s in sets for edge in s for v in edge} | {468, 473}   # + the iris centres
    return np.array(sorted(points - set(rigid_landmarks().tolist())))


def _head_frame(mesh: FaceMesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(local points, centre, rotation): local = (v - centre) R, x right, y down, z back."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    rotation = np.asarray(mesh.rotation, dtype=np.float64)
    centre = v[rigid_landmarks()].mean(axis=0)
    return (v - centre) @ rotation, centre, rotation


def _with_points(mesh: FaceMesh, local: np.ndarray, centre: np.ndarray, rotation: np.ndarray) -> FaceMesh:
    points = local @ rotation.T + centre
    return replace(mesh, vertices=points.astype(np.float32),
                   expression=expression_descriptor(points, rotation))


def expression_weights(local: np.ndarray) -> np.ndarray:
    """Per vertex in [0, 1]: how much of it is expression (module doc). `local`: head-frame points."""
    radius = np.sqrt(((local - local.mean(axis=0)) ** 2).sum(axis=1).mean())
    regions = local[expressive_landmarks()]
    dist = np.sqrt(((local[:, None, :] - regions[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
    near = np.clip(1.0 - dist / (FALLOFF * radius), 0.0, 1.0)
    # the jaw: all of the face below the mouth corners, ramping in from the nose base
    y_base, y_corners = local[NOSE_BASE, 1], local[list(MOUTH_CORNERS), 1].mean()
    jaw = np.clip((local[:, 1] - y_base) / max(y_corners - y_base, 1e-9), 0.0, 1.0)
    weights = np.maximum(near, jaw)
    weights[rigid_landmarks()] = 0.0
    return weights


def transfer_expression(mesh: FaceMesh, source: FaceMesh) -> FaceMesh:
    """`mesh` (shape, pose, frame kept) wearing the expression of `source` (any pose, any frame).
    The mesh's recorded pose stays: its rigid landmarks, which the pose is read from, do not move."""
    local, centre, rotation = _head_frame(mesh)
    other, _, _ = _head_frame(source)
    rigid = rigid_landmarks()
    # similarity transform of `other` onto `local` over the rigid landmarks (Umeyama's scale)
    a = other[rigid] - other[rigid].mean(axis=0)
    b = local[rigid] - local[rigid].mean(axis=0)
    turn, singular_sum = orthogonal_procrustes(a, b)
    scale = singular_sum / (a ** 2).sum()
    aligned = (other - other[rigid].mean(axis=0)) @ turn * scale + local[rigid].mean(axis=0)
    w = expression_weights(local)[:, None]
    return _with_points(mesh, local + w * (aligned - local), centre, rotation)


def neutral_expression(mesh: FaceMesh) -> FaceMesh:
    """`mesh` with its mouth closed: the jaw turned shut about its hinge (module doc)."""
    local, centre, rotation = _head_frame(mesh)
    hinge = 0.5 * (local[list(PORION_PROXY[0])].mean(axis=0) + local[list(PORION_PROXY[1])].mean(axis=0))
    upper, lower = local[UPPER_INNER_LIP] - hinge, local[LOWER_INNER_LIP] - hinge
    # the angle between the inner lips seen from the hinge, in the head's side (y, z) plane
    angle = np.arctan2(lower[1], -lower[2]) - np.arctan2(upper[1], -upper[2])
    y_upper, y_lower = local[UPPER_INNER_LIP, 1], local[LOWER_INNER_LIP, 1]
    if angle <= 0 or y_lower - y_upper <= 1e-9:
        return mesh                                     # already shut
    # how much of the jaw turn a point follows: none at the upper lip, all from the lower lip down
    follow = np.clip((local[:, 1] - y_upper) / (y_lower - y_upper), 0.0, 1.0)
    follow[rigid_landmarks()] = 0.0
    theta = angle * follow          # about the head's x axis, per point: a turn by theta lifts by theta
    rel = local - hinge
    cos, sin = np.cos(theta), np.sin(theta)
    turned = np.stack([rel[:, 0], cos * rel[:, 1] + sin * rel[:, 2], -sin * rel[:, 1] + cos * rel[:, 2]], axis=1)
    turned += hinge
    # the lips sit at different distances from the hinge: the jaw slides the rest of the way shut
    turned += follow[:, None] * (local[UPPER_INNER_LIP] - turned[LOWER_INNER_LIP])
    return _with_points(mesh, turned, centre, rotation)


def expression_mesh(image_rgb: np.ndarray, reconstructor: str = "mediapipe") -> FaceMesh:
    """The mesh of the (largest) face of an expression image, reconstructed a second time in a
    square around it at EXPRESSION_SIZE, so a small face in a big photo keeps its detail.
    NoFaceError when there is none."""
    image = np.asarray(image_rgb, dtype=np.uint8)
    first = reconstruct(image, backend=reconstructor)
    points = np.asarray(first.vertices, dtype=np.float64)[:, :2]
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    h, w = image.shape[:2]
    side = int(min(max(x1 - x0, y1 - y0) * EXPRESSION_MARGIN, h, w))
    left = int(np.clip(round((x0 + x1 - side) / 2), 0, w - side))
    top = int(np.clip(round((y0 + y1 - side) / 2), 0, h - side))
    return reconstruct(crop_square(image, (left, top, side), EXPRESSION_SIZE), backend=reconstructor)
