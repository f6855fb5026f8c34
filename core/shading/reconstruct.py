"""Face reconstruction: RGB image -> `FaceMesh`, behind a registry of named backends.

Default backend "mediapipe": the legacy FaceMesh solution of mediapipe 0.10.21 (478 3D
landmarks with refined irises), which runs offline from weights inside the wheel. Its
points are a weak-perspective reconstruction: x, y are image positions, z a depth on the
same scale as x. Triangles come from `topology.mediapipe_triangles`.

Plug-ins: `register_reconstructor(name, factory)`; `factory()` returns an object with
`name` and `__call__(image_rgb) -> FaceMesh`. "deca" (see `deca.py`) is registered here and
needs the licensed FLAME/DECA files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from ..errors import NoFaceError
from ..native_log import quiet_native_stderr
from .deca import DecaReconstructor
from .mesh import FaceMesh, Reconstructor
from .pose import euler_from_rotation, expression_descriptor, head_rotation
from .topology import mediapipe_triangles


class MediapipeReconstructor:
    """mediapipe legacy FaceMesh; the largest face wins when several are found.

    The graph is slow to build and not thread-safe, so one instance per process is shared
    (see `get_reconstructor`) and calls are serialised with a lock.
    """

    name = "mediapipe"

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5):
        # deferred: heavy (mediapipe), built once per process on first use
        from mediapipe.python.solutions.face_mesh import FaceMesh as _MPFaceMesh

        with quiet_native_stderr():  # the graph build logs to fd 2 (see core.native_log)
            self._mesh = _MPFaceMesh(static_image_mode=True, refine_landmarks=True,
                                     max_num_faces=max_faces, min_detection_confidence=min_confidence)
            # the graph starts its calculators on first use: one blank image makes their logging
            # happen here rather than on some later call
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))
        self._lock = threading.Lock()
        self._first_call = True

    def landmarks(self, image_rgb: np.ndarray) -> np.ndarray:
        """(478, 3) float64 points in pixels (module conventions) of the largest face."""
        image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        with self._lock:
            if self._first_call:  # the first inference logs too
                with quiet_native_stderr():
                    result = self._mesh.process(image)
                self._first_call = False
            else:
                result = self._mesh.process(image)
        faces = result.multi_face_landmarks or []
        if not faces:
            raise NoFaceError("no face found by the mediapipe face mesh")
        h, w = image.shape[:2]
        # mediapipe normalises x by width, y by height and z "roughly like x": scale z by width.
        scale = np.array([w, h, w], dtype=np.float64)
        all_points = [np.array([[p.x, p.y, p.z] for p in f.landmark]) * scale for f in faces]
        return max(all_points, key=lambda pts: np.ptp(pts[:, 0]) * np.ptp(pts[:, 1]))

    def __call__(self, image_rgb: np.ndarray) -> FaceMesh:
        points = self.landmarks(image_rgb)
        rotation = head_rotation(points)
        return FaceMesh(
            vertices=points.astype(np.float32),
            triangles=np.asarray(mediapipe_triangles(), dtype=np.int32),
            rotation=rotation.astype(np.float32),
            pose=euler_from_rotation(rotation).astype(np.float32),
            expression=expression_descriptor(points, rotation),
            frame_size=(int(image_rgb.shape[0]), int(image_rgb.shape[1])),
            backend=self.name,
        )


_FACTORIES: dict[str, Callable[[], Reconstructor]] = {}
_INSTANCES: dict[str, Reconstructor] = {}
_INSTANCES_LOCK = threading.Lock()


def register_reconstructor(name: str, factory: Callable[[], Reconstructor]) -> None:
    """Make `reconstruct(..., backend=name)` use `factory()` (built once per process)."""
    _FACTORIES[name] = factory
    _INSTANCES.pop(name, None)


def available_reconstructors() -> list[str]:
    return sorted(_FACTORIES)


def get_reconstructor(name: str = "mediapipe") -> Reconstructor:
    if name not in _FACTORIES:
        raise ValueError(f"unknown face reconstructor {name!r}; known: {', '.join(available_reconstructors())}")
    with _INSTANCES_LOCK:
        if name not in _INSTANCES:
            _INSTANCES[name] = _FACTORIES[name]()
        return _INSTANCES[name]


def reconstruct(image_rgb: np.ndarray, backend: str = "mediapipe") -> FaceMesh:
    """Reconstruct the (largest) face of an RGB uint8 image; NoFaceError when there is none."""
    return get_reconstructor(backend)(image_rgb)


def _deca_factory() -> Reconstructor:
    # DECA places its crop with the mediapipe mesh (the shared instance, built only when needed)
    return DecaReconstructor(landmarks=lambda image: get_reconstructor("mediapipe").landmarks(image))


register_reconstructor("mediapipe", MediapipeReconstructor)
register_reconstructor("deca", _deca_factory)
