"""RGB image (and optional target) -> the ShadingNet condition, cacheable as a small .npz.

Choice for the `target` column: the target image is reconstructed in its own square frame
and THAT mesh is rendered with the target's own fitted lighting. So the condition carries the
target's pose, expression and lighting (and, since mediapipe does not separate identity from
expression, the target's face shape too; identity reaches the model through the ID tokens).
`pose`, `sh` and `expression` in the result are always those of the rendered face, i.e. the
ones a generated image should match (Pose-/Light-RMSE compare against them).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np

from ..images import atomic_write_bytes, centre_box, crop_square
from .controls import Controls, apply_controls
from .light_fit import fit_sh
from .mesh import FaceMesh
from .reconstruct import reconstruct
from .render import render

FORMAT_VERSION = 2  # 2: + frame; version 1 files (training data prepared earlier) still load


@dataclass
class ShadingResult:
    condition: np.ndarray      # (size, size) uint8 grey render, background 0
    pose: np.ndarray           # (3,) yaw, pitch, roll in degrees of the rendered face
    sh: np.ndarray             # (9,) luminance SH coefficients of the rendered face (lighting.py)
    expression: np.ndarray     # (K,) expression descriptor of the rendered face
    mesh: FaceMesh             # the rendered mesh, in the size x size frame
    from_target: bool = False  # True when pose/expression/lighting come from a target image
    frame: tuple = ()          # (left, top, side): the square of the source image rendered into


# conditions are reconstructed at >= this side: the face mesh needs the detail
ANALYSIS_SIZE = 512


def analyse_frame(image_rgb: np.ndarray, size: int, reconstructor: str = "mediapipe",
                  box: tuple | None = None) -> tuple[FaceMesh, np.ndarray]:
    """Mesh and SH lighting of an image in the generation frame (the square `box` = (left, top,
    side), default the centre square, at `size`): the fit a condition is rendered from, and the
    source side of Pose/Light-RMSE."""
    image_rgb = np.asarray(image_rgb, dtype=np.uint8)
    frame = crop_square(image_rgb, box if box is not None else centre_box(image_rgb.shape), size)
    mesh = reconstruct(frame, backend=reconstructor)
    # The fit only needs normals, not speed: the pure cpu path keeps fits identical across machines.
    return mesh, fit_sh(frame, mesh, backend="cpu")


def make_condition(image_rgb: np.ndarray, target_rgb: np.ndarray | None = None, size: int = 512,
                   renderer: str = "auto", reconstructor: str = "mediapipe",
                   box: tuple | None = None, controls: Controls | None = None) -> ShadingResult:
    """Condition image for a reference, or for its target when one is given (then the
    reference is not reconstructed at all: nothing of its geometry is drawn; its face is
    checked by the face-analysis stage). `box` is the frame in the image rendered (default: its
    centre square). `controls`: the pose, expression and light asked for instead of the fitted
    ones (controls.py). Raises NoFaceError when the image rendered has no face."""
    from_target = target_rgb is not None
    source = np.asarray(target_rgb if from_target else image_rgb, dtype=np.uint8)
    box = tuple(int(v) for v in (box if box is not None else centre_box(source.shape)))
    mesh, sh = analyse_frame(source, size, reconstructor, box)
    if controls is not None and not controls.empty:
        mesh, sh = apply_controls(mesh, sh, controls)
    condition = render(mesh, sh, size=size, backend=renderer)
    return ShadingResult(condition=condition, pose=np.asarray(mesh.pose, dtype=np.float32),
                         sh=np.asarray(sh, dtype=np.float32), expression=mesh.expression,
                         mesh=mesh, from_target=from_target, frame=box)


def save_shading(path: str | os.PathLike, result: ShadingResult) -> None:
    """Write `result` as a compressed .npz (no pickle; ~30-60 kB at 512), atomically."""
    m = result.mesh
    buf = io.BytesIO()
    np.savez_compressed(
        buf, format_version=np.int32(FORMAT_VERSION), condition=result.condition, pose=result.pose,
        sh=result.sh, expression=result.expression, from_target=np.bool_(result.from_target),
        frame=np.asarray(result.frame, dtype=np.int64),
        vertices=m.vertices, triangles=m.triangles, rotation=m.rotation, mesh_pose=m.pose,
        mesh_expression=m.expression, frame_size=np.asarray(m.frame_size, dtype=np.int64),
        backend=np.str_(m.backend))
    atomic_write_bytes(path, buf.getvalue())


def load_shading(path: str | os.PathLike) -> ShadingResult:
    with np.load(path, allow_pickle=False) as z:
        version = int(z["format_version"])
        if version not in (1, FORMAT_VERSION):
            raise ValueError(f"{path}: shading cache format {version}, expected {FORMAT_VERSION}")
        mesh = FaceMesh(vertices=z["vertices"], triangles=z["triangles"], rotation=z["rotation"],
                        pose=z["mesh_pose"], expression=z["mesh_expression"],
                        frame_size=tuple(int(v) for v in z["frame_size"]), backend=str(z["backend"]))
        return ShadingResult(condition=z["condition"], pose=z["pose"], sh=z["sh"],
                             expression=z["expression"], mesh=mesh, from_target=bool(z["from_target"]),
                             frame=tuple(int(v) for v in z["frame"]) if "frame" in z.files else ())
