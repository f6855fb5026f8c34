"""Pose, expression and light asked for a condition (core.shading.controls), on the shipped photos.

Independent checks: the pose is read back with pose.py's estimator from the turned mesh and, through
mediapipe, from the photo re-drawn on the turned mesh; the light projection is compared with a
numerical integration over the sphere; mouth opening is measured on landmarks and on the render.
"""

import numpy as np
import pytest
from scipy.ndimage import binary_fill_holes, map_coordinates

from fmu.core.images import load_rgb
from fmu.core.shading.condition import analyse_frame, make_condition
from fmu.core.shading.consistency import light_error
from fmu.core.shading.controls import ControlRequest, Controls, apply_controls, pose_mesh, resolve
from fmu.core.shading.expression import expression_mesh, rigid_landmarks
from fmu.core.shading.light_fit import fit_sh
from fmu.core.shading.light_presets import PRESETS, LightError, directional_sh, parse_light
from fmu.core.shading.lighting import sh_basis
from fmu.core.shading.pose import euler_from_rotation, expression_descriptor, head_rotation
from fmu.core.shading.reconstruct import reconstruct
from fmu.core.shading.render import render
from fmu.core.shading.render_cpu import rasterize

ANGLES = (-45, -30, -15, 0, 15, 30, 45)


@pytest.fixture(scope="module")
def face_frame(astronaut):
    """The astronaut's face in a square twice its landmark box (the face fills the frame, as in the
    face frame generation uses)."""
    from fmu.core.images import crop_square

    v = reconstruct(astronaut).vertices
    lo, hi = v[:, :2].min(0), v[:, :2].max(0)
    side = int((hi - lo).max() * 2)
    centre = (lo + hi) / 2
    box = (int(centre[0] - side / 2), int(centre[1] - side / 2), side)
    frame = crop_square(astronaut, box, 512)
    mesh, sh = analyse_frame(frame, 512)
    return frame, mesh, sh


def read_pose(mesh):
    return euler_from_rotation(head_rotation(np.asarray(mesh.vertices, np.float64)))


def mouth_opening(vertices) -> float:
    """Inner-lip gap (landmarks 13, 14) over the outer eye-corner distance (33, 263)."""
    v = np.asarray(vertices, np.float64)
    return float(np.linalg.norm(v[13] - v[14]) / np.linalg.norm(v[33] - v[263]))


def mouth_hole(condition) -> int:
    """Background pixels enclosed by the rendered face: the open mouth (the eyes are closed by fans)."""
    face = condition > 0
    return int((binary_fill_holes(face) & ~face).sum())


def redrawn(source_mesh, posed_mesh, photo):
    """The photo's face drawn on the posed mesh: each pixel of the posed render takes the photo's
    colour at the same point of the surface (barycentric coordinates of its triangle)."""
    h, w = photo.shape[:2]
    posed = np.asarray(posed_mesh.vertices, np.float64)
    face, bary, _ = rasterize(posed[:, :2], posed[:, 2], posed_mesh.triangles, h, w)
    mask = face >= 0
    corners = np.asarray(source_mesh.vertices, np.float64)[:, :2][np.asarray(source_mesh.triangles)[face[mask]]]
    xy = np.einsum("pk,pkc->pc", bary[mask], corners)
    out = np.zeros_like(photo)
    for c in range(3):
        out[..., c][mask] = map_coordinates(photo[..., c].astype(np.float64), [xy[:, 1] - 0.5, xy[:, 0] - 0.5],
                                            order=1)
    return out


# --- pose --------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, 2], ids=["yaw", "pitch", "roll"])
def test_pose_is_read_back_from_the_posed_mesh(face_frame, axis):
    _, mesh, _ = face_frame
    source = np.asarray(mesh.pose, np.float64)
    pairwise = np.linalg.norm(mesh.vertices[:, None] - mesh.vertices[None], axis=2)
    for theta in ANGLES:
        angles = [None, None, None]
        angles[axis] = theta
        posed = pose_mesh(mesh, angles)
        expected = source.copy()
        expected[axis] = theta
        np.testing.assert_allclose(read_pose(posed), expected, atol=1e-3)   # pose.py on the turned points
        np.testing.assert_allclose(posed.pose, expected, atol=1e-4)          # what the mesh records
        # rigid: shape and expression kept
        moved = np.linalg.norm(posed.vertices[:, None] - posed.vertices[None], axis=2)
        np.testing.assert_allclose(moved, pairwise, atol=2e-3)
        np.testing.assert_allclose(expression_descriptor(posed.vertices, posed.rotation), mesh.expression,
                                   atol=1e-4)


def test_condition_carries_the_asked_pose(astronaut):
    plain = make_condition(astronaut, size=256, renderer="cpu")
    posed = make_condition(astronaut, size=256, renderer="cpu", controls=resolve(ControlRequest(yaw=30, roll=-10)))
    np.testing.assert_allclose(posed.pose, [30.0, plain.pose[1], -10.0], atol=1e-4)
    np.testing.assert_array_equal(posed.sh, plain.sh)             # light as fitted
    assert not np.array_equal(posed.condition, plain.condition)
    # an empty request is no request: the very same render
    same = make_condition(astronaut, size=256, renderer="cpu", controls=resolve(ControlRequest()))
    np.testing.assert_array_equal(same.condition, plain.condition)


def test_posed_render_reads_back_through_mediapipe(face_frame):
    """The photo re-drawn on the turned mesh, read by fmu's own estimator (mediapipe + pose.py).
    Roll comes back within 2 degrees. Yaw and pitch come back with the right sign and in order, but
    smaller than asked (about 0.7x at 30-45 degrees): the re-drawn face has no ears, hair or neck,
    and mediapipe then sees it flatter (a one-off dlib-landmark + PnP estimate read the yaw of these
    renders within ~4 degrees, so the turned geometry itself is right)."""
    frame, mesh, _ = face_frame
    reads = {}
    for axis in range(3):
        for theta in (-30, -15, 0, 15, 30) if axis < 2 else (-45, -15, 15, 45):
            angles = [None, None, None]
            angles[axis] = theta
            reads[axis, theta] = reconstruct(redrawn(mesh, pose_mesh(mesh, angles), frame)).pose
    for theta in (-45, -15, 15, 45):
        assert reads[2, theta][2] == pytest.approx(theta, abs=2.0)
    for axis in (0, 1):
        seq = [reads[axis, t][axis] for t in (-30, -15, 0, 15, 30)]
        assert np.all(np.diff(seq) > 3.0), seq                        # in order, clearly apart
        assert seq[0] < seq[2] - 8 and seq[4] > seq[2] + 8, seq       # both signs
        assert abs(reads[0, 15][0] - 15) < 5 and abs(reads[0, -15][0] + 15) < 5


# --- light ---------------------------------------------------------------------------------------

def _sphere(n=200_000):
    """A Fibonacci lattice: n nearly uniform unit vectors, each standing for 4 pi / n steradians."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5 ** 0.5) * i
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


@pytest.mark.parametrize("az,el", [(0, 0), (-90, 0), (45, 30), (160, -20), (0, 90)])
def test_directional_light_is_the_projection_of_the_clamped_cosine(az, el):
    a, e = np.radians([az, el])
    d = np.array([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)])
    dirs = _sphere()
    # <max(0, n.d), Y_k> over the sphere: the order-2 SH projection of the light's irradiance
    projected = (np.maximum(dirs @ d, 0)[:, None] * sh_basis(dirs)).sum(0) * 4 * np.pi / len(dirs)
    np.testing.assert_allclose(directional_sh(az, el, 1.0), projected, atol=2e-4)


def test_presets_agree_with_az_el_and_ambient():
    assert np.allclose(parse_light("left"), parse_light("az=-90,el=0"))
    assert np.allclose(parse_light("right"), parse_light("az=90, el=0, strength=0.6, ambient=0.25"))
    assert np.allclose(parse_light("front"), parse_light("az=0,el=0"))
    assert np.allclose(parse_light("top"), parse_light("el=90"))
    assert np.allclose(parse_light("bottom"), parse_light("el=-90"))
    assert np.allclose(parse_light("key-left"), parse_light("az=-45,el=30"))
    assert np.allclose(parse_light(" Flat "), parse_light("ambient"))
    flat = parse_light("flat")
    assert flat[0] * 0.282095 == pytest.approx(PRESETS["flat"][0]) and not flat[1:].any()
    # mirror images: left and right differ only in the terms odd in x (sh[3], sh[4], sh[7])
    odd = np.array([1, 1, 1, -1, -1, 1, 1, -1, 1])
    assert np.allclose(parse_light("left") * odd, parse_light("right"))
    assert np.allclose(parse_light("key-left") * odd, parse_light("key-right"))


def test_left_and_right_light_flip_the_bright_half(face_frame):
    _, mesh, _ = face_frame
    halves = {}
    for name in ("left", "right"):
        image = render(mesh, parse_light(name), 512, backend="cpu").astype(np.float64)
        _, xs = np.nonzero(image)
        mid = int(np.median(xs))
        face = image > 0
        halves[name] = image[:, :mid][face[:, :mid]].mean(), image[:, mid:][face[:, mid:]].mean()
    assert halves["left"][0] > 1.5 * halves["left"][1]
    assert halves["right"][1] > 1.5 * halves["right"][0]


def test_nine_numbers_pass_through_unchanged(astronaut):
    numbers = [1.2, -0.1, 0.45, 0.3, 0.02, -0.05, 0.01, 0.04, -0.03]
    text = "[" + ", ".join(str(v) for v in numbers) + "]"
    assert parse_light(text).tolist() == numbers
    assert parse_light(" ".join(map(str, numbers))).tolist() == numbers
    result = make_condition(astronaut, size=256, renderer="cpu", controls=resolve(ControlRequest(light=text)))
    assert result.sh.tolist() == np.asarray(numbers, np.float32).tolist()
    np.testing.assert_array_equal(result.condition, render(result.mesh, np.asarray(numbers), 256, backend="cpu"))


def test_a_fit_of_the_render_gives_back_the_asked_light(face_frame):
    """What light_error compares an output with: a perfect output (the render itself) scores ~0."""
    _, mesh, _ = face_frame
    for name in ("left", "key-right", "top"):
        image = np.repeat(render(mesh, parse_light(name), 512, backend="cpu")[..., None], 3, axis=2)
        assert light_error(fit_sh(image, mesh), parse_light(name)) < 0.01, name
    assert light_error(parse_light("left"), parse_light("right")) > 0.2


@pytest.mark.parametrize("text,kind", [("sideways", "bad_light"), ("az=500,el=0", "out_of_range"),
                                        ("az=10,tilt=3", "bad_light"), ("1,2,3", "bad_light"),
                                        ("1,2,3,4,5,6,7,8,99", "out_of_range"), ("el=x", "bad_light"),
                                        ("strength=1", "bad_light")])
def test_unusable_lights_say_why(text, kind):
    with pytest.raises(LightError) as err:
        parse_light(text)
    assert err.value.kind == kind and text.split(",")[0] in str(err.value)


# --- expression ------------------------------------------------------------------------------------

def test_expression_from_one_photo_pose_from_the_request(astronaut, photos):
    """The astronaut smiles with her mouth open; Tom Hanks' mouth is closed. Rendered with his
    expression at yaw 30: her rigid face, his mouth, the asked yaw."""
    hanks = load_rgb(photos["tom_hanks.png"])
    hanks_open = mouth_opening(expression_mesh(hanks).vertices)
    plain = make_condition(astronaut, size=512, renderer="cpu")
    assert mouth_opening(plain.mesh.vertices) > 0.1 and hanks_open < 0.03         # the photos differ
    assert mouth_hole(plain.condition) > 150
    request = ControlRequest(expression=str(photos["tom_hanks.png"]), yaw=30)
    mixed = make_condition(astronaut, size=512, renderer="cpu", controls=resolve(request))
    assert mouth_opening(mixed.mesh.vertices) == pytest.approx(hanks_open, abs=0.01)
    assert mouth_hole(mixed.condition) < 0.2 * mouth_hole(plain.condition)
    read = read_pose(mixed.mesh)
    assert read[0] == pytest.approx(30.0, abs=1.0)                                  # yaw as asked
    assert mixed.pose[0] == pytest.approx(30.0) and mixed.pose[1] == pytest.approx(plain.pose[1])
    # the other way round: Hanks wearing the astronaut's open mouth
    hanks_plain = make_condition(hanks, size=512, renderer="cpu")
    opened = make_condition(hanks, size=512, renderer="cpu",
                            controls=resolve(ControlRequest(expression=str(photos["astronaut.png"]))))
    assert mouth_opening(opened.mesh.vertices) == pytest.approx(mouth_opening(plain.mesh.vertices), abs=0.02)
    assert mouth_hole(opened.condition) > mouth_hole(hanks_plain.condition) + 100


def test_expression_keeps_the_reference_shape(face_frame, photos):
    _, mesh, sh = face_frame
    other = expression_mesh(load_rgb(photos["tom_hanks.png"]))
    worn, same_sh = apply_controls(mesh, sh, Controls(expression=other))
    rigid = rigid_landmarks()
    np.testing.assert_allclose(worn.vertices[rigid], mesh.vertices[rigid], atol=1e-3)   # untouched
    np.testing.assert_array_equal(worn.rotation, mesh.rotation)
    np.testing.assert_array_equal(same_sh, sh)
    assert np.abs(read_pose(worn) - mesh.pose).max() < 1.0    # the brows move; the pose barely does
    assert not np.allclose(worn.vertices, mesh.vertices, atol=1.0)                    # the mouth did move


def test_neutral_closes_the_mouth(face_frame):
    _, mesh, sh = face_frame
    shut, _ = apply_controls(mesh, sh, Controls(expression="neutral"))
    assert mouth_opening(mesh.vertices) > 0.1 and mouth_opening(shut.vertices) < 0.005
    rigid = rigid_landmarks()
    np.testing.assert_allclose(shut.vertices[rigid], mesh.vertices[rigid], atol=1e-3)
    before, after = render(mesh, sh, 512, backend="cpu"), render(shut, sh, 512, backend="cpu")
    assert mouth_hole(after) < 0.5 * mouth_hole(before)
    upper_face = shut.vertices[:, 1] < mesh.vertices[2, 1]         # above the nose base: not moved
    np.testing.assert_allclose(shut.vertices[upper_face & ~np.isin(np.arange(478), [13, 14])],
                               mesh.vertices[upper_face & ~np.isin(np.arange(478), [13, 14])], atol=1e-3)
