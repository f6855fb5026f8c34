"""Reconstructor registry, the DECA plug-in's refusal, and renderer selection."""

import numpy as np
import pytest

from fmu.core.shading import reconstruct, register_reconstructor
from fmu.core.shading.deca import REQUIRED_FILES, missing_requirements
from fmu.core.shading.mesh import FaceMesh, ReconstructorUnavailable
from fmu.core.shading.reconstruct import available_reconstructors
from fmu.core.shading.render import pytorch3d_available, render, resolve_backend


def test_deca_refuses_and_names_the_missing_files(tmp_path, monkeypatch):
    (tmp_path / "head_template.obj").write_text("v 0 0 0\n")
    monkeypatch.setenv("FMU_DECA_DATA", str(tmp_path))
    problems = " ".join(missing_requirements(tmp_path))
    assert "generic_model.pkl" in problems and "deca_model.tar" in problems
    assert "head_template.obj" not in problems
    with pytest.raises(ReconstructorUnavailable, match=r"generic_model\.pkl"):
        reconstruct(np.zeros((64, 64, 3), np.uint8), backend="deca")
    assert set(REQUIRED_FILES) >= {"generic_model.pkl", "deca_model.tar"}


def test_registry_takes_a_plug_in(monkeypatch):
    import importlib

    # (`core.shading.reconstruct` the attribute is the function; the module lives in sys.modules.)
    rec_module = importlib.import_module("fmu.core.shading.reconstruct")

    # Register on copies so the plug-in does not leak into other tests.
    monkeypatch.setattr(rec_module, "_FACTORIES", dict(rec_module._FACTORIES))
    monkeypatch.setattr(rec_module, "_INSTANCES", dict(rec_module._INSTANCES))

    class Fixed:
        name = "fixed"

        def __call__(self, image):
            return FaceMesh(vertices=np.zeros((3, 3), np.float32), triangles=np.array([[0, 1, 2]], np.int32),
                            rotation=np.eye(3, dtype=np.float32), pose=np.zeros(3, np.float32),
                            expression=np.zeros(1, np.float32), frame_size=image.shape[:2], backend=self.name)

    register_reconstructor("fixed", Fixed)
    assert "fixed" in available_reconstructors() and "mediapipe" in available_reconstructors()
    assert reconstruct(np.zeros((32, 48, 3), np.uint8), backend="fixed").frame_size == (32, 48)
    with pytest.raises(ValueError, match="unknown face reconstructor"):
        reconstruct(np.zeros((8, 8, 3), np.uint8), backend="nope")


def test_renderer_selection():
    assert resolve_backend("cpu") == "cpu"
    assert resolve_backend("auto") == ("pytorch3d" if pytorch3d_available() else "cpu")
    with pytest.raises(ValueError, match="unknown renderer"):
        resolve_backend("opengl")


@pytest.mark.skipif(pytorch3d_available(), reason="pytorch3d is importable: nothing to refuse")
def test_pytorch3d_requested_but_absent_is_a_clear_error():
    mesh = FaceMesh(vertices=np.array([[1, 1, 0], [30, 2, 0], [5, 30, 0]], np.float32),
                    triangles=np.array([[0, 1, 2]], np.int32), rotation=np.eye(3, dtype=np.float32),
                    pose=np.zeros(3, np.float32), expression=np.zeros(1, np.float32), frame_size=(32, 32))
    with pytest.raises(RuntimeError, match="pytorch3d"):
        render(mesh, np.eye(9)[0], 32, backend="pytorch3d")
    assert (render(mesh, np.eye(9)[0] * 2, 32, backend="auto") > 0).sum() > 300
