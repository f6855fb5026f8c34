"""FaceSim with the offline dlib model on shipped photos, checked against dlib called directly."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from fmu.core.images import decode_rgb, load_rgb
from fmu.core.scoring.face_batch import face_embeddings
from fmu.core.scoring.facesim import facesim_summary


def _insightface_image(name: str) -> np.ndarray:
    import insightface

    return load_rgb(os.path.join(os.path.dirname(insightface.__file__), "data", "images", name))


def _jpeg(image: np.ndarray, quality: int = 60) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return decode_rgb(buf.getvalue())


def _direct_dlib_embedding(image: np.ndarray) -> np.ndarray:
    """dlib's own pipeline, written out without fmu: HOG (no upsampling), 5-point shape,
    ResNet descriptor of the most confident face. Valid for images 400..1600 px (no rescaling)."""
    import dlib
    import face_recognition_models as frm

    image = np.ascontiguousarray(image)
    rects, scores, _ = dlib.get_frontal_face_detector().run(image, 0, 0.0)
    rect = rects[int(np.argmax(scores))]
    shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())(image, rect)
    enc = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    return np.asarray(enc.compute_face_descriptor(image, shape))


@pytest.fixture(scope="module")
def backend():
    from fmu.core.faces import get_backend

    return get_backend("dlib")


@pytest.fixture(scope="module")
def variants(astronaut):
    return {
        "flip": np.ascontiguousarray(astronaut[:, ::-1]),
        "rot8": np.asarray(Image.fromarray(astronaut).rotate(8, resample=Image.Resampling.BICUBIC)),
        "jpeg": _jpeg(astronaut),
    }


@pytest.fixture(scope="module")
def other_people():
    """Four of t1.jpg's six people, each cut into its own single-face image (~300 px)."""
    t1 = _insightface_image("t1.jpg")
    boxes = [(65, 284, 169, 388), (452, 300, 577, 424), (734, 365, 837, 469), (883, 89, 987, 192)]
    crops = []
    for x1, y1, x2, y2 in boxes:
        cx, cy, half = (x1 + x2) // 2, (y1 + y2) // 2, 150
        crops.append(t1[max(0, cy - half):cy + half, max(0, cx - half):cx + half].copy())
    return crops


def test_same_person_matches_and_equals_direct_dlib(backend, astronaut, variants):
    ref = _direct_dlib_embedding(astronaut)
    found = face_embeddings(backend, [astronaut] + list(variants.values()), workers=2)
    assert all(f.found and f.num_faces >= 1 for f in found)
    np.testing.assert_allclose(found[0].embedding, ref, atol=1e-5)
    for name, f in zip(variants, found[1:]):
        direct = _direct_dlib_embedding(variants[name])
        np.testing.assert_allclose(f.embedding, direct, atol=1e-5)
        expected = 1.0 - float(np.linalg.norm(ref - direct))
        value, reason = backend.id_similarity(ref, variants[name])
        assert reason is None
        assert value == pytest.approx(expected, abs=1e-5)
        assert value > 0.4 and backend.is_match(ref, f.embedding), (name, value)


def test_different_people_do_not_match(backend, astronaut, other_people):
    ref = face_embeddings(backend, [astronaut])[0].embedding
    found = face_embeddings(backend, other_people, workers=2)
    assert all(f.found for f in found)
    for f in found:
        assert backend.similarity(ref, f.embedding) < 0.4
        assert not backend.is_match(ref, f.embedding)
    # and the t1 people are not each other either
    for i in range(len(found)):
        for j in range(i + 1, len(found)):
            assert not backend.is_match(found[i].embedding, found[j].embedding)


def test_batched_path_equals_backend_detect_and_threads_do_not_change_results(backend, astronaut, variants):
    images = [astronaut, *variants.values(), np.full((300, 300, 3), 127, np.uint8)]
    serial = face_embeddings(backend, images, workers=1, batch_size=2)
    threaded = face_embeddings(backend, images, workers=2, batch_size=32)
    for img, a, b in zip(images, serial, threaded):
        faces = backend.detect(img)
        assert a.num_faces == b.num_faces == len(faces)
        if faces:
            best = max(faces, key=lambda f: f.score)
            np.testing.assert_allclose(a.embedding, best.embedding, atol=1e-5)
            np.testing.assert_allclose(b.embedding, best.embedding, atol=1e-5)
        else:
            assert a.embedding is None and b.embedding is None


def test_no_face_is_reported_and_counted_as_zero_in_strict_mean(backend, astronaut):
    ref = face_embeddings(backend, [astronaut])[0].embedding
    value, reason = backend.id_similarity(ref, np.full((400, 400, 3), 90, np.uint8))
    assert value is None and reason.startswith("no_face")
    stats = facesim_summary([0.9, None, 0.6], [True, False, True])
    assert stats == {"n": 3, "n_detected": 2, "n_no_face": 1,
                     "mean_strict": pytest.approx(1.5 / 3), "mean_detected": pytest.approx(0.75)}


def test_worker_process_embeddings_equal_in_process(backend, astronaut, variants):
    from fmu.core.scoring.face_batch import POOL_MIN_IMAGES

    images = ([astronaut, *variants.values()] * POOL_MIN_IMAGES)[:POOL_MIN_IMAGES]
    pooled = face_embeddings(backend, images, workers=2)       # spawned dlib workers
    inline = face_embeddings(backend, images[:4], workers=1)
    for j, f in enumerate(pooled):
        np.testing.assert_allclose(f.embedding, inline[j % 4].embedding, atol=1e-6)
