"""Head pose and expression from the mediapipe mesh, on the shipped astronaut photo."""

import numpy as np
import pytest

from fmu.core.errors import NoFaceError
from fmu.core.images import load_rgb, to_square
from fmu.core.shading.pose import euler_from_rotation, expression_descriptor, head_rotation, rotation_from_euler
from fmu.core.shading.reconstruct import reconstruct


@pytest.fixture(scope="module")
def face(astronaut):
    return reconstruct(to_square(astronaut, 512))


def test_euler_round_trip_and_axis_meaning():
    for ypr in [(0, 0, 0), (30, -10, 5), (-45, 20, -15), (10, 60, 80)]:
        assert np.allclose(euler_from_rotation(rotation_from_euler(*ypr)), ypr, atol=1e-9)
    # A face turned to the image's right: its backward axis e3 gains a negative x component
    # (the nose, pointing along -e3, moves toward +x).
    r = rotation_from_euler(30, 0, 0)
    assert r[0, 2] == pytest.approx(-np.sin(np.radians(30)))
    # Looking up: the nose direction -e3 gets a negative (upward) y component.
    r = rotation_from_euler(0, 20, 0)
    assert -r[1, 2] == pytest.approx(-np.sin(np.radians(20)))
    # Clockwise roll in a y-down image: the head's right axis e1 tilts toward +y.
    r = rotation_from_euler(0, 0, 10)
    assert r[1, 0] == pytest.approx(np.sin(np.radians(10)))


def test_mesh_fields_on_the_astronaut(face):
    assert face.vertices.shape == (478, 3) and face.vertices.dtype == np.float32
    assert face.triangles.shape == (884, 3) and face.triangles.max() < 478
    assert face.frame_size == (512, 512)
    # Landmarks sit on the face in the frame: nose tip (1) between the outer eye corners, below them.
    v = face.vertices
    assert v[33, 0] < v[1, 0] < v[263, 0] and v[1, 1] > v[33, 1]
    # z is positive away from the camera: the nose tip is nearer than the ear-level contour.
    assert v[1, 2] < v[234, 2] and v[1, 2] < v[454, 2]
    # A near-frontal photo.
    assert np.all(np.abs(face.pose) < 15)
    assert np.allclose(face.rotation @ face.rotation.T, np.eye(3), atol=1e-5)


def test_rigid_motion_of_the_landmarks_moves_the_pose_exactly(face):
    pts = face.vertices.astype(np.float64)
    q = rotation_from_euler(25, -15, 10)
    moved = (pts - pts.mean(0)) @ q.T * 1.7 + np.array([40.0, -20.0, 5.0])
    # The frame is built from the points, so it rotates with them: R' = Q R.
    assert np.allclose(head_rotation(moved), q @ head_rotation(pts), atol=1e-9)
    # The expression descriptor ignores rotation, scale and translation.
    assert np.allclose(expression_descriptor(moved, q @ head_rotation(pts)),
                       expression_descriptor(pts, head_rotation(pts)), atol=1e-5)


def test_mirrored_photo_negates_yaw_and_roll(astronaut, face):
    flipped = reconstruct(to_square(astronaut[:, ::-1], 512))
    assert flipped.yaw == pytest.approx(-face.yaw, abs=3.0)
    assert flipped.roll == pytest.approx(-face.roll, abs=3.0)
    assert flipped.pitch == pytest.approx(face.pitch, abs=3.0)


def test_in_plane_rotation_shows_up_as_roll(astronaut, face):
    from PIL import Image

    turned = np.asarray(Image.fromarray(to_square(astronaut, 512)).rotate(20, resample=Image.BILINEAR))
    # PIL rotates counter-clockwise, so the head tilts counter-clockwise: roll drops by ~20.
    assert reconstruct(turned).roll - face.roll == pytest.approx(-20.0, abs=4.0)


def test_no_face_raises(photos):
    cat = to_square(load_rgb(photos["chelsea.png"]), 512)
    with pytest.raises(NoFaceError):
        reconstruct(cat)
    with pytest.raises(NoFaceError):
        reconstruct(np.full((256, 256, 3), 128, dtype=np.uint8))
