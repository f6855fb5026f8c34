"""make_condition on the astronaut, target transfer, and the .npz cache round trip."""

import numpy as np
import pytest
from PIL import Image

from fmu.core.errors import NoFaceError
from fmu.core.images import load_rgb, to_square
from fmu.core.shading.condition import load_shading, make_condition, save_shading
from fmu.core.shading.reconstruct import reconstruct
from fmu.core.shading.render import render


@pytest.fixture(scope="module")
def reference(astronaut):
    return make_condition(astronaut, size=256, renderer="cpu")


@pytest.fixture(scope="module")
def tilted(astronaut):
    # Same person, head tilted ~25 deg counter-clockwise and lit differently (darker left side).
    img = Image.fromarray(to_square(astronaut, 512)).rotate(25, resample=Image.BILINEAR)
    arr = np.asarray(img).astype(np.float64)
    arr *= np.linspace(0.5, 1.0, arr.shape[1])[None, :, None]
    return arr.astype(np.uint8)


def test_condition_is_the_render_of_the_square_frame(astronaut, reference):
    assert reference.condition.shape == (256, 256) and reference.condition.dtype == np.uint8
    assert not reference.from_target
    mesh = reconstruct(to_square(astronaut, 256))
    assert np.allclose(reference.pose, mesh.pose, atol=1e-4)
    assert reference.mesh.frame_size == (256, 256)
    assert np.array_equal(reference.condition, render(reference.mesh, reference.sh, 256, backend="cpu"))
    assert reference.sh.shape == (9,) and reference.expression.shape == (478 * 3,)


def test_target_transfers_pose_and_lighting(astronaut, reference, tilted):
    moved = make_condition(astronaut, target_rgb=tilted, size=256, renderer="cpu")
    alone = make_condition(tilted, size=256, renderer="cpu")
    assert moved.from_target
    # The render is exactly the target's own condition: its pose, expression and lighting.
    assert np.array_equal(moved.condition, alone.condition)
    assert np.allclose(moved.pose, alone.pose) and np.allclose(moved.sh, alone.sh)
    assert moved.pose[2] - reference.pose[2] == pytest.approx(-25.0, abs=5.0)
    assert not np.array_equal(moved.condition, reference.condition)
    # The darker image side (left) pulls the light toward the right: sh[3] (x) grows.
    assert moved.sh[3] > reference.sh[3]


def test_no_face_in_reference_or_target(astronaut, photos):
    cat = load_rgb(photos["chelsea.png"])
    with pytest.raises(NoFaceError):
        make_condition(cat, size=128, renderer="cpu")
    with pytest.raises(NoFaceError):
        make_condition(astronaut, target_rgb=cat, size=128, renderer="cpu")


def test_save_load_round_trip(tmp_path, reference):
    path = tmp_path / "cache" / "ref.npz"
    save_shading(path, reference)
    back = load_shading(path)
    assert path.stat().st_size < 200_000
    for name in ("condition", "pose", "sh", "expression"):
        a, b = getattr(reference, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    for name in ("vertices", "triangles", "rotation", "pose", "expression"):
        assert np.array_equal(getattr(reference.mesh, name), getattr(back.mesh, name)), name
    assert back.mesh.frame_size == reference.mesh.frame_size and back.mesh.backend == "mediapipe"
    assert back.from_target is False
    # The cached mesh renders to the cached condition.
    assert np.array_equal(render(back.mesh, back.sh, 256, backend="cpu"), back.condition)
