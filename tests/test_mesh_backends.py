"""The two mediapipe face-mesh APIs behind `reconstruct(..., "mediapipe")` (core/shading/reconstruct.py).

The legacy `solutions.face_mesh` (Python 3.11-3.12) runs here. The Tasks `FaceLandmarker` (3.13+)
needs `face_landmarker.task`, which cannot be downloaded in tests, and no working bundle can be
assembled from the legacy wheel's models (README, "Face mesh on Python 3.13+"), so the Tasks path is
tested around its model: the real Tasks API builds and runs on a bundle assembled from the wheel's
detector and 468-point model, and, with the model call answered by the legacy mesh's own normalised
points, everything after the call must reproduce the legacy backend exactly.
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from fmu.core.errors import NoFaceError, UsageError
from fmu.core.runner.config import SourceOptions
from fmu.core.shading.reconstruct import (
    FACE_LANDMARKER_ENV,
    MediapipeReconstructor,
    face_landmarker_path,
    largest_face,
    mesh_api,
    mesh_model_problem,
)
from fmu.core.shading.topology import mesh_connections

# the module (the package's `reconstruct` name is the function)
reconstruct_module = importlib.import_module("fmu.core.shading.reconstruct")


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def wheel_bundle(tmp_path_factory) -> Path:
    """A .task zip of the legacy wheel's face detector and 468-point landmark model (the Tasks
    graph's member names)."""
    import mediapipe

    modules = Path(mediapipe.__file__).parent / "modules"
    task = tmp_path_factory.mktemp("bundle") / "from_wheel.task"
    with zipfile.ZipFile(task, "w") as zf:
        zf.write(modules / "face_detection" / "face_detection_short_range.tflite", "face_detector.tflite")
        zf.write(modules / "face_landmark" / "face_landmark.tflite", "face_landmarks_detector.tflite")
    return task


def test_the_api_is_chosen_by_what_is_importable():
    legacy = importlib.util.find_spec("mediapipe.python.solutions.face_mesh") is not None
    assert mesh_api() == ("legacy" if legacy else "tasks")
    # what pyproject's markers install: the legacy wheel below 3.13, the Tasks-only mediapipe from 3.13
    assert mesh_api() == ("legacy" if sys.version_info < (3, 13) else "tasks")


def test_largest_face_scales_normalised_points_to_pixels():
    small = np.array([[0.1, 0.1, 0.01], [0.2, 0.2, -0.02]])
    big = np.array([[0.5, 0.4, 0.0], [0.9, 0.8, 0.05]])
    got = largest_face([small, big], width=200, height=100)
    np.testing.assert_allclose(got, [[100, 40, 0], [180, 80, 10]])   # x, z by width; y by height
    with pytest.raises(NoFaceError):
        largest_face([], 10, 10)


def test_connection_sets_agree_between_the_apis():
    """The Tasks API's connection sets (what mesh_connections reads without the legacy wheel) are the
    legacy ones, for every set the installed Tasks class has."""
    from mediapipe.python.solutions import face_mesh_connections as fm
    from mediapipe.tasks.python.vision.face_landmarker import FaceLandmarksConnections

    compared = 0
    for name in ("TESSELATION", "LIPS", "LEFT_EYE", "RIGHT_EYE", "LEFT_EYEBROW", "RIGHT_EYEBROW", "LEFT_IRIS",
                 "RIGHT_IRIS", "FACE_OVAL", "NOSE"):
        assert mesh_connections(name) == frozenset(getattr(fm, f"FACEMESH_{name}")), name
        tasks = getattr(FaceLandmarksConnections, f"FACE_LANDMARKS_{name}", None)
        if tasks is not None:
            assert {(c.start, c.end) for c in tasks} == set(getattr(fm, f"FACEMESH_{name}")), name
            compared += 1
    assert compared >= 9   # 0.10.21's Tasks class has all but NOSE


def test_tasks_backend_without_its_model_names_the_pull_command(tmp_path, monkeypatch):
    monkeypatch.setenv(FACE_LANDMARKER_ENV, str(tmp_path / "absent.task"))
    assert face_landmarker_path() == tmp_path / "absent.task"
    with pytest.raises(UsageError, match=r"fmu weights pull --set authors --only face-landmarker"):
        MediapipeReconstructor(api="tasks")
    assert mesh_model_problem() is None   # the legacy API needs no file
    monkeypatch.setattr(reconstruct_module, "mesh_api", lambda: "tasks")
    assert "`fmu weights pull --set authors --only face-landmarker`" in mesh_model_problem()
    (tmp_path / "absent.task").write_bytes(b"zip")
    assert mesh_model_problem() is None
    monkeypatch.delenv(FACE_LANDMARKER_ENV)
    assert face_landmarker_path().parts[-2:] == ("face-landmarker", "face_landmarker.task")


def test_generate_refuses_up_front_when_the_tasks_model_is_missing(tmp_path, monkeypatch):
    """Python 3.13+ without face_landmarker.task: a usage error (exit 2) before any row, naming the command."""
    from fmu.core.runner import preflight

    monkeypatch.setattr(reconstruct_module, "mesh_api", lambda: "tasks")
    monkeypatch.setenv(FACE_LANDMARKER_ENV, str(tmp_path / "face_landmarker.task"))
    source = SourceOptions(renderer="cpu")
    with pytest.raises(UsageError, match=r"shading channel: .*`fmu weights pull --set authors --only face-landmarker`"):
        preflight.check_renderer(source, shading=True)
    preflight.check_renderer(source, shading=False)   # no shading channel, no mesh needed


def test_tasks_api_runs_on_a_bundle_from_the_wheel(wheel_bundle, photos):
    """The real FaceLandmarker graph loads the bundle, finds the astronaut's face and returns 478
    points, and finds none on a cat. (Its points are not a usable mesh: the graph reads the 468-point
    model's output as 478 points; see README.)"""
    tasks = MediapipeReconstructor(api="tasks", model_path=wheel_bundle)
    assert tasks.api == "tasks"
    points = tasks.landmarks(_rgb(photos["astronaut.png"]))
    assert points.shape == (478, 3) and np.isfinite(points).all()
    with pytest.raises(NoFaceError):
        tasks.landmarks(_rgb(photos["chelsea.png"]))


def test_tasks_backend_reproduces_the_legacy_mesh_around_the_model_call(wheel_bundle, photos, monkeypatch):
    """The Tasks model call answered with the legacy mesh's normalised landmarks of the same photo:
    image hand-over, result parsing, largest-face choice, scaling and the FaceMesh built from it
    must give the legacy backend's mesh exactly."""
    from mediapipe.python.solutions.face_mesh import FaceMesh as LegacyMesh
    from mediapipe.tasks.python import vision

    legacy_graph = LegacyMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=4)

    class StandIn:
        def detect(self, image):
            found = legacy_graph.process(image.numpy_view()).multi_face_landmarks or []
            return SimpleNamespace(face_landmarks=[list(face.landmark) for face in found])

    created = []
    monkeypatch.setattr(vision.FaceLandmarker, "create_from_options",
                        classmethod(lambda cls, options: created.append(options) or StandIn()))
    tasks = MediapipeReconstructor(api="tasks", model_path=wheel_bundle)
    legacy = MediapipeReconstructor(api="legacy")
    assert created[0].base_options.model_asset_path == str(wheel_bundle) and created[0].num_faces == 4
    for name in ("astronaut.png", "tom_hanks.png"):
        image = _rgb(photos[name])
        a, b = tasks(image), legacy(image)
        np.testing.assert_allclose(a.vertices, b.vertices, rtol=0, atol=1e-3)
        np.testing.assert_allclose(a.pose, b.pose, atol=1e-3)
        assert a.backend == b.backend == "mediapipe" and np.array_equal(a.triangles, b.triangles)
    with pytest.raises(NoFaceError):
        tasks(_rgb(photos["chelsea.png"]))


def test_doctor_names_the_backend_and_the_missing_model(tmp_path, monkeypatch):
    from fmu.core import doctor

    report = doctor.Report()
    doctor.check_face_mesh(report)
    row = report.find("shading", "reconstructor mediapipe")
    assert row.ok is True and row.detail.startswith("backend: legacy FaceMesh (mediapipe 0.10.21)")

    monkeypatch.setattr(doctor, "mesh_api", lambda: "tasks")
    monkeypatch.setenv(FACE_LANDMARKER_ENV, str(tmp_path / "face_landmarker.task"))
    report = doctor.Report()
    doctor.check_face_mesh(report)
    row = report.find("shading", "reconstructor mediapipe")
    assert row.ok is False and "backend: Tasks FaceLandmarker" in row.detail
    assert "`fmu weights pull --set authors --only face-landmarker` fetches it" in row.detail

    (tmp_path / "face_landmarker.task").write_bytes(b"zip")
    report = doctor.Report()
    doctor.check_face_mesh(report)
    row = report.find("shading", "reconstructor mediapipe")
    assert row.ok is True and row.detail.endswith(str(tmp_path / "face_landmarker.task"))
