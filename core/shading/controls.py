"""Pose, expression and light asked for a condition, and what they do to the mesh and lighting it is
rendered from.

A `ControlRequest` holds the values as a manifest row or `fmu shade` gives them (angles in degrees,
an expression image path or `neutral`, a light text); `resolve` turns it into `Controls` (the
expression image reconstructed, the light as 9 SH coefficients) and `apply_controls` changes the
fitted (mesh, sh) of the reference or target: expression first (in the head frame), then the pose,
then the light. Values left out keep the fitted ones, so an empty request changes nothing.

Pose: yaw, pitch, roll (pose.py's conventions: yaw > 0 turns the face toward the image's right,
pitch > 0 looks up, roll > 0 tilts clockwise) replace the matching angles of the fitted pose; the
mesh turns rigidly about its centre, so its shape and expression are kept and the pose read back
from the turned mesh is exactly the one asked for. Bounds (`POSE_BOUNDS`): yaw +-90 (a profile; the
mediapipe mesh is the face's front surface only, past 90 the camera would see its inside), pitch +-60
(past that the chin or forehead hides most of the face), roll +-90 (in the image plane: the renderer
does any angle and the pose estimator reads it back within a few degrees up to 90; an upside-down
face is no portrait).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..images import load_rgb
from .expression import NEUTRAL, expression_mesh, neutral_expression, transfer_expression
from .light_presets import parse_light
from .mesh import FaceMesh
from .pose import rotation_from_euler

POSE_ANGLES = ("yaw", "pitch", "roll")
POSE_BOUNDS = {"yaw": (-90.0, 90.0), "pitch": (-60.0, 60.0), "roll": (-90.0, 90.0)}
CONTROL_COLUMNS = (*POSE_ANGLES, "expression", "light")


@dataclass(frozen=True)
class ControlRequest:
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    expression: str | None = None   # path of an image whose expression to use, or "neutral"
    light: str | None = None        # a light text (light_presets.py)

    @classmethod
    def from_record(cls, record) -> ControlRequest:
        """The controls of a table row (a mapping: manifest row, results or scores record); a
        missing column is not asked for. The one place a row becomes a request."""
        return cls(**{c: record.get(c) for c in CONTROL_COLUMNS})

    @property
    def empty(self) -> bool:
        return all(getattr(self, c) is None for c in CONTROL_COLUMNS)

    @property
    def angles(self) -> tuple:
        return (self.yaw, self.pitch, self.roll)

    @property
    def expression_file(self) -> str | None:
        """The expression image's path (None for none or `neutral`)."""
        return None if self.expression is None or is_neutral(self.expression) else self.expression

    def key(self, expression_digest: str | None = None) -> str:
        """What the condition depends on, as text: angles, the expression image's bytes (its digest)
        or `neutral`, the light's SH numbers (so `left` and `az=-90,el=0` share a cache entry)."""
        angles = ",".join("-" if a is None else repr(float(a)) for a in self.angles)
        expression = "-" if self.expression is None else NEUTRAL if is_neutral(self.expression) else expression_digest
        light = "-" if self.light is None else ",".join(repr(float(v)) for v in parse_light(self.light))
        return f"pose={angles};expression={expression};light={light}"


@dataclass
class Controls:
    """A resolved request: what `apply_controls` needs."""

    angles: tuple = (None, None, None)        # yaw, pitch, roll (None: keep the fitted angle)
    expression: FaceMesh | str | None = None  # the expression face's mesh, or "neutral"
    sh: np.ndarray | None = None              # (9,) SH lighting, used as is

    @property
    def empty(self) -> bool:
        return self.expression is None and self.sh is None and all(a is None for a in self.angles)


def is_neutral(value: str) -> bool:
    return str(value).strip().lower() == NEUTRAL


def resolve(request: ControlRequest, expression: FaceMesh | None = None,
            reconstructor: str = "mediapipe") -> Controls:
    """`request` ready to apply. `expression`: the expression image's mesh when the caller has it
    already (else it is reconstructed here; NoFaceError / ImageError when that fails)."""
    if request.expression_file is not None and expression is None:
        expression = expression_mesh(load_rgb(request.expression_file), reconstructor)
    return Controls(angles=request.angles,
                    expression=NEUTRAL if request.expression is not None and request.expression_file is None
                    else expression,
                    sh=None if request.light is None else parse_light(request.light))


def requested_pose(pose, angles) -> np.ndarray:
    """The fitted (yaw, pitch, roll) with the asked angles put in place."""
    return np.array([float(p) if a is None else float(a) for p, a in zip(pose, angles)])


def requested_fit(source_fit, request: ControlRequest) -> tuple[np.ndarray, np.ndarray]:
    """(pose, sh) a condition made for `request` shows, from the (pose, sh) fitted to its source:
    what Pose/Light errors compare an output with. An expression leaves both as fitted (the rigid
    landmarks the pose is read from do not move). LightError for a light that cannot be used."""
    pose, sh = source_fit
    sh = np.asarray(sh, dtype=np.float64) if request.light is None else parse_light(request.light)
    return requested_pose(pose, request.angles), sh


def pose_mesh(mesh: FaceMesh, angles) -> FaceMesh:
    """`mesh` turned rigidly about its centre to the pose `requested_pose(mesh.pose, angles)`."""
    target = requested_pose(mesh.pose, angles)
    new_rotation = rotation_from_euler(*target)
    # R' = Q R: the head frame is built from the points, so turning them by Q turns it by Q too
    turn = new_rotation @ np.asarray(mesh.rotation, dtype=np.float64).T
    v = np.asarray(mesh.vertices, dtype=np.float64)
    centre = v.mean(axis=0)
    return replace(mesh, vertices=((v - centre) @ turn.T + centre).astype(np.float32),
                   rotation=new_rotation.astype(np.float32), pose=target.astype(np.float32))


def apply_controls(mesh: FaceMesh, sh: np.ndarray, controls: Controls) -> tuple[FaceMesh, np.ndarray]:
    """(mesh, sh) with the asked expression, pose and light (module doc)."""
    if controls.expression is not None:
        if mesh.backend != "mediapipe":
            raise ValueError(f"expression control needs the mediapipe mesh, not {mesh.backend!r}")
        mesh = (neutral_expression(mesh) if isinstance(controls.expression, str)
                else transfer_expression(mesh, controls.expression))
    if any(a is not None for a in controls.angles):
        mesh = pose_mesh(mesh, controls.angles)
    if controls.sh is not None:
        sh = np.asarray(controls.sh, dtype=np.float64)
    return mesh, sh
