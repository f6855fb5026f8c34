"""The offline `mesh` region parser on a real photo, checked against mediapipe landmarks computed
here independently (the full photo through mediapipe's own FaceMesh, not fmu's face frame)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from fmu.core.regions import NOT_SUPPORTED, NOT_VISIBLE, FaceFrame, get_parser
from fmu.training.phrases import extract_phrases

CAPTION = "an astronaut with full red lips, thin eyebrows, blue eyes and a small nose"
NOSE_TIP = 1  # mediapipe's pronasale


@pytest.fixture(scope="module")
def landmarks(astronaut) -> np.ndarray:
    """(478, 2) pixel positions from mediapipe's FaceMesh run on the whole photo."""
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as mesh:
        result = mesh.process(astronaut)
    h, w = astronaut.shape[:2]
    return np.array([[p.x * w, p.y * h] for p in result.multi_face_landmarks[0].landmark])


@pytest.fixture(scope="module")
def parsed(astronaut):
    from fmu.core.faces import get_backend

    box = get_backend("dlib").analyse(astronaut).bbox
    return get_parser("mesh").parse(astronaut, box)


def _ids(name: str) -> list[int]:
    from mediapipe.python.solutions import face_mesh_connections as fmc

    return sorted({v for edge in getattr(fmc, f"FACEMESH_{name}") for v in edge})


def _distance(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Pixels from each point to the nearest mask pixel (0 inside)."""
    far = ndimage.distance_transform_edt(~mask)
    ij = np.floor(points).astype(int)
    return far[ij[:, 1], ij[:, 0]]


def _hull_mask(points: np.ndarray, shape) -> np.ndarray:
    import skimage.draw
    from scipy.spatial import ConvexHull

    v = points[ConvexHull(points).vertices]
    mask = np.zeros(shape, bool)
    rr, cc = skimage.draw.polygon(v[:, 1] - 0.5, v[:, 0] - 0.5, shape)
    mask[rr, cc] = True
    return mask


def test_caption_regions_sit_where_the_landmarks_say(parsed, landmarks, astronaut):
    phrases = extract_phrases(CAPTION)
    assert [(p.text, p.regions) for p in phrases] == [
        ("full red lips", ("lips",)), ("thin eyebrows", ("eyebrows",)), ("blue eyes", ("eyes",)),
        ("small nose", ("nose",))]
    masks = {}
    for p in phrases:
        mask, reason = parsed.union(p.regions)
        assert reason is None and mask.shape == astronaut.shape[:2] and mask.dtype == bool
        masks[p.regions[0]] = mask

    # lips: every lip landmark on the lips (within 2 px: the inner contour borders the open mouth)
    lips = landmarks[_ids("LIPS")]
    assert _distance(masks["lips"], lips).max() <= 2.0
    assert (_distance(masks["lips"], lips) <= 1.5).mean() >= 0.9
    # ... and not the nose tip, which lies on the nose
    tip = landmarks[NOSE_TIP]
    assert not masks["lips"][int(tip[1]), int(tip[0])] and masks["nose"][int(tip[1]), int(tip[0])]
    assert _distance(masks["lips"], tip[None])[0] >= 5
    mouth = _hull_mask(lips, astronaut.shape[:2])  # the mouth as the hull of the lip landmarks
    assert (parsed.masks["mouth"] & mouth).sum() / (parsed.masks["mouth"] | mouth).sum() > 0.8
    nose = _hull_mask(landmarks[_ids("NOSE")], astronaut.shape[:2])
    assert (masks["nose"] & nose).sum() / (masks["nose"] | nose).sum() > 0.8

    # eyebrows above the eyes, side by side (the subject's left eye is on the image's right)
    for side in ("LEFT", "RIGHT"):
        eye, brow = landmarks[_ids(f"{side}_EYE")], landmarks[_ids(f"{side}_EYEBROW")]
        eye_mask, brow_mask = parsed.masks[f"{side.lower()}_eye"], parsed.masks[f"{side.lower()}_eyebrow"]
        assert _distance(eye_mask, eye).max() <= 1.5 and _distance(brow_mask, brow).max() <= 2.5
        brow_rows, eye_rows = np.nonzero(brow_mask)[0], np.nonzero(eye_mask)[0]
        assert brow_rows.max() < eye_rows.min()                  # the whole brow is above the whole eye
        assert brow_rows.mean() < eye[:, 1].min()                # ... and above the eye's landmarks
        centre = eye.mean(0)
        assert eye_mask[int(centre[1]), int(centre[0])]
        assert brow[:, 0].min() - 5 < np.nonzero(brow_mask)[1].mean() < brow[:, 0].max() + 5
    assert landmarks[_ids("LEFT_EYE"), 0].mean() > landmarks[_ids("RIGHT_EYE"), 0].mean()
    assert np.nonzero(parsed.masks["left_eye"])[1].mean() > np.nonzero(parsed.masks["right_eye"])[1].mean()
    assert masks["eyes"].sum() == parsed.masks["left_eye"].sum() + parsed.masks["right_eye"].sum()

    # no two of the named regions overlap
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not (masks[a] & masks[b]).any(), (a, b)


def test_skin_zones_and_what_mesh_cannot_mask(parsed, landmarks):
    m = parsed.masks
    assert set(m) >= {"face", "skin", "forehead", "cheeks", "chin", "moustache", "lower_face", "irises", "hair"}
    # skin zones are parts of the skin, and lie where the landmarks put them
    for zone in ("forehead", "cheeks", "chin", "moustache", "lower_face"):
        assert not (m[zone] & ~m["skin"]).any(), zone
    brows = landmarks[_ids("LEFT_EYEBROW") + _ids("RIGHT_EYEBROW")]
    lips = landmarks[_ids("LIPS")]
    assert np.nonzero(m["forehead"])[0].mean() < brows[:, 1].min()
    assert np.nonzero(m["chin"])[0].mean() > lips[:, 1].max()
    assert lips[:, 1].min() - 12 < np.nonzero(m["moustache"])[0].mean() < lips[:, 1].min()
    assert not (m["irises"] & ~m["eyes"]).any() and m["irises"].sum() > 0
    assert not (m["hair"] & m["face"]).any() and np.nonzero(m["hair"])[0].mean() < brows[:, 1].min()
    for region in ("ears", "earrings", "eyeglasses", "hat", "neck", "necklace", "clothes"):
        assert region not in m and parsed.missing[region].startswith(NOT_SUPPORTED)


def test_mirrored_photo_gives_mirrored_masks_with_sides_swapped(parsed, astronaut):
    from fmu.core.faces import get_backend

    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    other = get_parser("mesh").parse(flipped, get_backend("dlib").analyse(flipped).bbox)
    for a, b in (("left_eye", "right_eye"), ("lips", "lips"), ("nose", "nose"), ("left_eyebrow", "right_eyebrow"),
                 ("left_cheek", "right_cheek"), ("hair", "hair")):
        mine, theirs = parsed.masks[a], other.masks[b][:, ::-1]
        # mediapipe is not exactly mirror-symmetric: the same place and size, to a pixel or two
        centre = np.argwhere(mine).mean(0) - np.argwhere(theirs).mean(0)
        assert np.abs(centre).max() < 2.5 and 0.75 < mine.sum() / theirs.sum() < 1.33, (a, centre)


def test_turned_head_hides_the_far_eye():
    """Landmarks of the photo turned 75 degrees about the vertical axis: the far eye and brow are
    behind the surface (z-buffer), so they are reported not visible; the near ones are masked."""
    import skimage.data

    from fmu.core.faces import get_backend
    from fmu.core.regions.base import WORK_SIDE
    from fmu.core.regions.mesh import mesh_regions
    from fmu.core.shading.reconstruct import get_reconstructor

    photo = skimage.data.astronaut()
    frame = FaceFrame.around(get_backend("dlib").analyse(photo).bbox, photo.shape)
    points = get_reconstructor("mediapipe").landmarks(frame.crop(photo))
    centre = points.mean(0)
    for yaw, hidden, seen in ((75, "right", "left"), (-75, "left", "right")):
        a = np.radians(yaw)
        turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        masks, missing = mesh_regions((points - centre) @ turn.T + centre, WORK_SIDE)
        assert missing[f"{hidden}_eye"].startswith(NOT_VISIBLE) and not masks[f"{hidden}_eye"].any()
        assert masks[f"{seen}_eye"].sum() > 50 and f"{seen}_eye" not in missing
        assert not (masks[f"{seen}_eye"] & masks["nose"]).any()


def test_no_face_gives_reasons_not_masks(photos):
    from fmu.core.images import load_rgb

    cat = load_rgb(photos["chelsea.png"])
    result = get_parser("mesh").parse(cat, None)
    assert result.masks == {}
    assert result.missing["lips"].startswith(NOT_VISIBLE) and "found no face" in result.missing["lips"]
    assert result.missing["hat"].startswith(NOT_SUPPORTED)


def test_face_frame_crop_and_paste_round_trip():
    rng = np.random.default_rng(0)
    shape = (200, 300)
    mask = np.zeros(shape, bool)
    mask[40:120, 230:290] = True                          # a block near the right border
    frame = FaceFrame.around((220, 30, 290, 110), shape)  # its frame leaves the photo on the right
    assert frame.left + frame.side > shape[1]
    image = np.repeat(mask[..., None], 3, 2).astype(np.uint8) * 255
    crop = frame.crop(image, 512)
    assert crop.shape == (512, 512, 3)
    back = frame.paste(crop[..., 0] >= 128)
    inside = np.zeros(shape, bool)
    inside[max(frame.top, 0):frame.top + frame.side, max(frame.left, 0):frame.left + frame.side] = True
    edge = ndimage.binary_dilation(mask, iterations=1) & ~ndimage.binary_erosion(mask, iterations=1)
    assert not (back ^ (mask & inside))[~edge].any()      # equal but for the block's one-pixel rim
    assert not back[~inside].any()
    points = rng.uniform(0, 512, (10, 3))
    photo = frame.to_photo(points)
    np.testing.assert_allclose(photo[:, 0], frame.left + points[:, 0] * frame.side / 512)
    np.testing.assert_allclose(photo[:, 2], points[:, 2] * frame.side / 512)


def test_outlines_walk_loops_and_paths():
    from mediapipe.python.solutions import face_mesh_connections as fmc

    from fmu.core.regions.landmark_sets import face_mesh_sets, outlines

    assert outlines([(3, 1), (1, 2), (2, 3), (7, 6), (5, 6)]) == ([[1, 2, 3]], [[5, 6, 7]])
    with pytest.raises(ValueError, match="branches"):
        outlines([(1, 2), (1, 3), (1, 4)])
    sets = face_mesh_sets()
    for name, edges in (("left_eye", fmc.FACEMESH_LEFT_EYE), ("right_iris", fmc.FACEMESH_RIGHT_IRIS),
                        ("face_oval", fmc.FACEMESH_FACE_OVAL)):
        loop = sets[name]
        walked = {frozenset(e) for e in zip(loop, loop[1:] + loop[:1])}
        assert walked == {frozenset(e) for e in edges}
    assert {frozenset(e) for loop in sets["lips"] for e in zip(loop, loop[1:] + loop[:1])} == \
        {frozenset(e) for e in fmc.FACEMESH_LIPS}
    assert {frozenset(e) for path in sets["left_eyebrow"] for e in itertools.pairwise(path)} == \
        {frozenset(e) for e in fmc.FACEMESH_LEFT_EYEBROW}
