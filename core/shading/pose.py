"""Head pose and expression from 3D face landmarks (pure numpy).

Why not a rigid fit against mediapipe's canonical face? The legacy mediapipe 0.10.21 wheel
does not ship it (`modules/face_geometry/data/` is empty: the canonical model and the
Procrustes weights only come inside `.task` bundles we do not have). So the head frame is
built from anatomy instead, on the mediapipe landmark numbering:

- left-right axis e1: the sum of (subject's left - subject's right) vectors over 14
  bilaterally symmetric, mostly rigid landmark pairs (eye corners, temples, cheeks, nose
  wings, brows). Summing many pairs averages out landmark noise.
- forward axis: the Frankfurt horizontal, the anatomical reference for head pitch: from
  the ear (porion, approximated by the mean of the three face-contour points at ear level)
  to the lower orbital rim (orbitale, approximated by landmarks 230/450), averaged over
  both sides and made orthogonal to e1. Pitch 0 means that plane is horizontal. The
  landmark proxies are approximations: absolute pitch can be off by several degrees (on
  the frontal astronaut photo it reads +4 deg); differences between two images, which is
  what the consistency metrics use, are not affected by such a constant offset.

Frames: points are in image pixels, x right, y down, z away from the camera (the
"camera" convention of OpenCV). The head rotation R has columns (e1, e2, e3) = the head's
right-pointing (image right on a frontal face), downward and backward axes in that frame;
a frontal upright face has R = I.

Euler angles, degrees, R = Ry(-yaw) @ Rx(-pitch) @ Rz(roll) in the camera frame:
- yaw > 0: the face turns toward the image's right (the subject's left);
- pitch > 0: the face looks up;
- roll > 0: the head tilts clockwise as seen in the image.
Mirroring an image negates yaw and roll and keeps pitch.
"""

from __future__ import annotations

import numpy as np

# (subject's right, subject's left) landmark pairs. Subject's right appears on image left.
SYMMETRIC_PAIRS = (
    (33, 263), (133, 362),               # outer, inner eye corners
    (234, 454), (127, 356), (162, 389),  # face contour at ear / temple level
    (21, 251), (54, 284),                # upper forehead contour
    (129, 358), (98, 327), (64, 294),    # nose wings
    (70, 300), (105, 334),               # brows
    (116, 345), (123, 352),              # cheekbones
)
PORION_PROXY = ((127, 234, 93), (356, 454, 323))  # contour points at ear level, right / left
ORBITALE_PROXY = (230, 450)                        # lower orbital rim, right / left


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError("degenerate landmarks: cannot define a head axis")
    return v / n


def head_rotation(points: np.ndarray) -> np.ndarray:
    """(3, 3) rotation whose columns are the head's right, down and back axes (see module doc)."""
    p = np.asarray(points, dtype=np.float64)
    right, left = np.array(SYMMETRIC_PAIRS).T
    e1 = _unit((p[left] - p[right]).sum(axis=0))
    porion = 0.5 * (p[list(PORION_PROXY[0])].mean(axis=0) + p[list(PORION_PROXY[1])].mean(axis=0))
    orbitale = p[list(ORBITALE_PROXY)].mean(axis=0)
    forward = orbitale - porion                   # points toward the camera on a frontal face
    e3 = _unit(-(forward - (forward @ e1) * e1))  # backward, orthogonal to e1
    e2 = np.cross(e3, e1)                         # right-handed: e3 x e1 = e2 (down)
    return np.stack([e1, e2, e3], axis=1)


def euler_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees for R = Ry(-yaw) Rx(-pitch) Rz(roll) (camera frame)."""
    r = np.asarray(rotation, dtype=np.float64)
    yaw = -np.arctan2(r[0, 2], r[2, 2])
    pitch = np.arcsin(np.clip(r[1, 2], -1.0, 1.0))
    roll = np.arctan2(r[1, 0], r[1, 1])
    return np.degrees([yaw, pitch, roll])


def rotation_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Inverse of `euler_from_rotation` (degrees in, camera-frame rotation out)."""
    y, p, r = np.radians([-yaw, -pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def expression_descriptor(points: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Landmarks with the rigid pose removed: rotated into the head frame, centred on their
    centroid and divided by their RMS radius, flattened to (3N,) float32.

    mediapipe does not separate identity shape from expression, so this vector carries both;
    compare two descriptors of the same person to read expression change.
    """
    p = np.asarray(points, dtype=np.float64)
    local = (p - p.mean(axis=0)) @ np.asarray(rotation, dtype=np.float64)  # = R^T (p - c)
    scale = np.sqrt((local ** 2).sum(axis=1).mean())
    return (local / max(scale, 1e-12)).astype(np.float32).ravel()
