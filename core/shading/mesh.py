"""The reconstruction's data: `FaceMesh` (what every reconstructor returns), the `Reconstructor`
interface plug-ins implement, and the error for one that cannot run here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class FaceMesh:
    """One reconstructed face in the frame of the image it came from.

    vertices:   (N, 3) float32. x right, y down in image pixels (pixel centres at i + 0.5);
                z = depth in pixels, positive AWAY from the camera, origin near the head
                centre (so the nose tip has the smallest z).
    triangles:  (T, 3) int32 vertex indices, consistently wound (sign fixed at render time).
    rotation:   (3, 3) head rotation, columns = head's right/down/back axes (pose.py).
    pose:       (3,) float32 yaw, pitch, roll in degrees (conventions in pose.py).
    expression: (K,) float32 pose-free descriptor (backend-specific, see the backend).
    frame_size: (height, width) of the image the coordinates refer to.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    rotation: np.ndarray
    pose: np.ndarray
    expression: np.ndarray
    frame_size: tuple[int, int]
    backend: str = "mediapipe"

    @property
    def yaw(self) -> float:
        return float(self.pose[0])

    @property
    def pitch(self) -> float:
        return float(self.pose[1])

    @property
    def roll(self) -> float:
        return float(self.pose[2])


class Reconstructor(Protocol):
    name: str

    def __call__(self, image_rgb: np.ndarray) -> FaceMesh: ...


class ReconstructorUnavailable(RuntimeError):
    """A configured reconstructor cannot run here (missing licensed files or packages)."""
