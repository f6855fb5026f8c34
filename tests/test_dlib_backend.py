"""The offline dlib backend on real shipped photos."""

import io

import dlib
import face_recognition_models as frm
import numpy as np
import pytest
from PIL import Image

from fmu.core.errors import MultiFaceError, NoFaceError
from fmu.core.faces import get_backend
from fmu.core.faces.cache import FaceCache
from fmu.core.images import load_rgb, save_png


@pytest.fixture(scope="module")
def backend():
    return get_backend("dlib")


def _jpeg(image, quality=70):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _rotate(image, degrees):
    return np.asarray(Image.fromarray(image).rotate(degrees, resample=Image.Resampling.BICUBIC))


def test_same_person_closer_than_different_people(backend, astronaut, photos):
    ref = backend.analyse(astronaut).embedding
    variants = {"flip": astronaut[:, ::-1].copy(), "rotate": _rotate(astronaut, 8), "jpeg": _jpeg(astronaut)}
    same = {name: backend.distance(ref, backend.analyse(img).embedding) for name, img in variants.items()}
    hanks = backend.analyse(load_rgb(photos["tom_hanks.png"])).embedding
    others = [backend.distance(ref, f.embedding) for f in backend.detect(load_rgb(photos["t1.jpg"]))]
    others.append(backend.distance(ref, hanks))
    assert max(same.values()) < 0.6 < min(others), (same, others)
    assert max(same.values()) < min(others)
    assert all(backend.is_match(ref, backend.analyse(img).embedding) for img in variants.values())
    assert not backend.is_match(ref, hanks)


def test_embedding_equals_direct_dlib(backend, astronaut):
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    (rect,) = detector(astronaut, 0)
    direct = np.array(encoder.compute_face_descriptor(astronaut, predictor(astronaut, rect)))
    (face,) = backend.detect(astronaut)
    np.testing.assert_allclose(face.embedding, direct, atol=1e-6)
    assert face.bbox.tolist() == [rect.left(), rect.top(), rect.right(), rect.bottom()]
    assert backend.similarity(face.embedding, direct) == pytest.approx(1.0, abs=1e-6)


def test_multi_face_policies_and_no_face(backend, photos):
    group = load_rgb(photos["t1.jpg"])
    faces = backend.detect(group)
    assert len(faces) == 6
    chosen = backend.analyse(group, "largest")
    assert chosen.num_faces == 6
    assert np.allclose(chosen.bbox, max(faces, key=lambda f: f.area).bbox)
    assert chosen.crop.shape == (224, 224, 3)
    with pytest.raises(MultiFaceError):
        backend.analyse(group, "error")
    with pytest.raises(NoFaceError):
        backend.analyse(load_rgb(photos["chelsea.png"]))


def test_cache_analyses_each_distinct_image_once(backend, photos, tmp_path):
    cache = FaceCache(tmp_path, backend)
    first = cache.analyse_file(photos["astronaut.png"])
    again = cache.analyse_file(photos["astronaut.png"])
    assert cache.analyses == 1
    np.testing.assert_array_equal(first.embedding, again.embedding)
    with pytest.raises(NoFaceError):
        cache.analyse_file(photos["chelsea.png"])
    with pytest.raises(NoFaceError):
        cache.analyse_file(photos["chelsea.png"])
    assert cache.analyses == 2
    with pytest.raises(MultiFaceError):
        cache.analyse_file(photos["t1.jpg"], "error")
    cache.analyse_file(photos["t1.jpg"], "best")
    assert cache.analyses == 3
    with pytest.raises(ValueError):  # a cache holds one pick: asking it for another is a bug
        cache.analyse_file(photos["t1.jpg"], "largest")


def test_cache_follows_a_file_replaced_under_the_same_name(backend, photos, tmp_path, monkeypatch):
    """The file digest is remembered per file version: a cached reference is not read again,
    and a new picture saved under the same path is analysed afresh."""
    import hashlib
    import os
    import shutil
    from pathlib import Path

    from PIL import Image

    from fmu.core.digests import file_digest

    ref = tmp_path / "ref.png"
    shutil.copy(photos["astronaut.png"], ref)
    assert file_digest(ref) == hashlib.sha256(ref.read_bytes()).hexdigest()
    cache = FaceCache(tmp_path / "cache", backend)
    astro = cache.analyse_file(ref)
    reads, hashes = [], []
    real_read, real_hash = Path.read_bytes, hashlib.file_digest
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or real_read(self))
    monkeypatch.setattr(hashlib, "file_digest", lambda *a, **k: hashes.append(a) or real_hash(*a, **k))
    np.testing.assert_array_equal(cache.analyse_file(ref).embedding, astro.embedding)
    assert "ref.png" not in reads and not hashes and cache.analyses == 1  # neither read nor hashed

    shutil.copy(photos["tom_hanks.png"], ref)
    st = ref.stat()
    os.utime(ref, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert file_digest(ref) == hashlib.sha256(real_read(ref)).hexdigest()
    hanks = cache.analyse_file(ref)
    assert cache.analyses == 2
    direct = backend.analyse(np.asarray(Image.open(ref).convert("RGB")))
    np.testing.assert_allclose(hanks.embedding, direct.embedding, atol=1e-6)


def test_best_is_the_most_confident_face_and_survives_a_larger_false_positive(backend, astronaut, tmp_path):
    """In this crop of the astronaut photo dlib also finds a "face" on her suit's patch, a few
    pixels bigger than her real face: `largest` takes the patch, `best` (default) her face."""
    img = np.clip(astronaut[15:497, 6:476].astype(np.float32) * 1.12, 0, 255).astype(np.uint8)
    faces = backend.detect(img)
    assert len(faces) == 2
    real, patch = sorted(faces, key=lambda f: -f.score)
    assert patch.area > real.area and patch.bbox[1] > 300  # the patch sits low, on the suit
    assert np.allclose(backend.analyse(img).bbox, real.bbox)
    assert np.allclose(backend.analyse(img, "largest").bbox, patch.bbox)
    save_png(tmp_path / "crop.png", img)
    best, largest = FaceCache(tmp_path / "c", backend), FaceCache(tmp_path / "c", backend, pick="largest")
    assert np.allclose(best.analyse_file(tmp_path / "crop.png").bbox, real.bbox)
    assert np.allclose(largest.analyse_file(tmp_path / "crop.png", "largest").bbox, patch.bbox)
    assert best.root != largest.root  # each pick cached apart
