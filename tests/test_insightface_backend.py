"""The insightface backend on tiny stand-in packs (no real SCRFD/ArcFace weights exist offline).

The tiny detector reports faces planted at known positions, so these tests check the
plumbing around the models (routing, BGR/RGB, letterbox scaling, alignment, batching,
normalisation, errors), each against a computation that does not go through the backend.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import insightface
import numpy as np
import onnxruntime as ort
import pytest
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.scrfd import SCRFD
from insightface.utils.face_align import norm_crop
from skimage import data as skdata
from skimage import transform as sktransform

from fmu.core.errors import MultiFaceError, NoFaceError, UsageError
from fmu.core.faces import providers
from fmu.core.faces.insightface_backend import MATCH_COSINE, InsightFaceBackend, _quiet_face_align, find_pack
from fmu.core.model.tiny_onnx import ARCFACE_TEMPLATE, plant_face, write_tiny_arcface, write_tiny_pack, write_tiny_scrfd

IMAGES = Path(insightface.__file__).parent / "data" / "images"

# Face positions in the shipped photos (image pixels), measured once with dlib's HOG
# detector + 68-point predictor: eye centres, nose tip (pt 30), mouth corners (48, 54).
ASTRONAUT_BOX = [170.0, 60.0, 275.0, 175.0]
ASTRONAUT_KPS = [[203, 102], [246, 104], [225, 127], [201, 139], [246, 141]]
T1_FACES = [  # (box, kps), left to right
    ([67, 283, 175, 390], [[88, 330], [129, 310], [118, 337], [114, 372], [148, 352]]),
    ([275, 176, 364, 265], [[292, 212], [320, 194], [302, 229], [313, 249], [338, 234]]),
    ([450, 295, 557, 402], [[492, 320], [540, 334], [509, 366], [481, 369], [531, 380]]),
    ([724, 367, 832, 474], [[762, 399], [800, 404], [771, 431], [764, 436], [807, 442]]),
    ([870, 67, 999, 196], [[917, 118], [950, 115], [923, 148], [929, 176], [959, 169]]),
    ([1118, 283, 1226, 390], [[1149, 328], [1192, 325], [1164, 348], [1153, 367], [1196, 364]]),
]


def rgb(name: str) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(IMAGES / name))[:, :, ::-1])


@pytest.fixture(autouse=True)
def no_real_packs(tmp_path, monkeypatch):
    """Keep a developer's real ~/.insightface or $INSIGHTFACE_HOME out of every test."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "insightface_home"))


@pytest.fixture(scope="module")
def astronaut():
    return np.ascontiguousarray(skdata.astronaut())


@pytest.fixture(scope="module")
def t1():
    return rgb("t1.jpg")


def _backend(root: Path, image_hw, faces, **kwargs) -> InsightFaceBackend:
    planted = [plant_face(image_hw, box, np.array(kps, float)) for box, kps in faces]
    write_tiny_pack(root, faces=planted)
    return InsightFaceBackend(models_dir=root, **kwargs)


@pytest.fixture(scope="module")
def astro_backend(tmp_path_factory, astronaut):
    return _backend(tmp_path_factory.mktemp("astro"), astronaut.shape[:2],
                    [(ASTRONAUT_BOX, ASTRONAUT_KPS)])


@pytest.fixture(scope="module")
def t1_backend(tmp_path_factory, t1):
    return _backend(tmp_path_factory.mktemp("t1"), t1.shape[:2], T1_FACES)


def direct_embedding(model_path: str, rgb_crop_112: np.ndarray) -> np.ndarray:
    """ArcFace preprocessing by hand: RGB, (p - 127.5) / 127.5, NCHW; then plain onnxruntime."""
    blob = ((rgb_crop_112.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: blob})[0][0]
    return out / np.linalg.norm(out)


def similarity_warp(image: np.ndarray, kps: np.ndarray, size: int) -> np.ndarray:
    """The ArcFace-template alignment written out with skimage + OpenCV (not insightface)."""
    tform = sktransform.SimilarityTransform.from_estimate(np.asarray(kps, np.float64),
                                                          ARCFACE_TEMPLATE * (size / 112.0))
    return cv2.warpAffine(image, tform.params[:2], (size, size), borderValue=0.0)


# ------------------------------------------------------------------------------- loading

def test_model_zoo_routes_the_tiny_pack(astro_backend):
    assert type(astro_backend.detector) is SCRFD
    assert type(astro_backend.recognizer) is ArcFaceONNX
    assert astro_backend.detector.use_kps and astro_backend.detector.fmc == 3
    assert astro_backend.detector._num_anchors == 2
    # torch-style ArcFace: insightface normalises outside the graph with 127.5 / 127.5.
    assert (astro_backend.recognizer.input_mean, astro_backend.recognizer.input_std) == (127.5, 127.5)
    assert astro_backend.embedding_dim == 512
    assert astro_backend.detector.input_sizes == [(640, 640)]
    assert astro_backend.providers == ["CPUExecutionProvider"]


def test_embedding_dim_comes_from_the_recognizer(tmp_path):
    write_tiny_pack(tmp_path, dim=128)
    backend = InsightFaceBackend(models_dir=tmp_path)
    assert backend.embedding_dim == 128
    faces = backend.detect(np.ascontiguousarray(skdata.astronaut()))
    assert faces[0].embedding.shape == (128,)


def test_identity_hashes_the_loaded_files(astro_backend):
    ident = astro_backend.identity()
    pack = Path(ident["pack"])
    assert pack.name == "buffalo_l"
    for key, fname in (("detector", "det_10g.onnx"), ("recognition", "w600k_r50.onnx")):
        assert ident[key] == {fname: hashlib.sha256((pack / fname).read_bytes()).hexdigest()[:16]}
    assert (ident["backend"], ident["det_size"], ident["det_thresh"]) == ("insightface", 640, 0.5)


# ------------------------------------------------------------------------------ detection

def test_astronaut_face_box_and_landmarks(astro_backend, astronaut):
    faces = astro_backend.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    np.testing.assert_allclose(face.bbox, ASTRONAUT_BOX, atol=0.01)
    np.testing.assert_allclose(face.landmarks, ASTRONAUT_KPS, atol=0.01)
    assert face.bbox.dtype == np.float32 and face.landmarks.shape == (5, 2)
    assert face.score == pytest.approx(1.0)


def test_t1_six_faces_letterboxed(t1_backend, t1):
    # t1 is 1280x886: SCRFD letterboxes it to 640x443, so coordinates come back via /0.5.
    faces = sorted(t1_backend.detect(t1), key=lambda f: f.bbox[0])
    assert len(faces) == 6
    for face, (box, kps) in zip(faces, T1_FACES):
        np.testing.assert_allclose(face.bbox, box, atol=0.01)
        np.testing.assert_allclose(face.landmarks, kps, atol=0.01)


def test_det_size_is_used(tmp_path, astronaut):
    backend = _backend(tmp_path, astronaut.shape[:2], [(ASTRONAUT_BOX, ASTRONAUT_KPS)], det_size=320)
    face, = backend.detect(astronaut)
    np.testing.assert_allclose(face.bbox, ASTRONAUT_BOX, atol=0.01)
    assert (320, 320) in backend.detector.resolution_sessions
    assert (640, 640) not in backend.detector.resolution_sessions
    assert backend.identity()["det_size"] == 320


def test_blank_image_has_no_face(astro_backend, astronaut):
    blank = np.full((300, 400, 3), 128, np.uint8)
    assert astro_backend.detect(blank) == []
    with pytest.raises(NoFaceError):
        astro_backend.analyse(blank)
    # The gate is local: flatten only the planted face's centre and the face is gone.
    erased = astronaut.copy()
    erased[80:160, 180:270] = 128
    assert astro_backend.detect(erased) == []


def test_rejects_non_rgb_arrays(astro_backend):
    with pytest.raises(ValueError, match="RGB"):
        astro_backend.detect(np.zeros((64, 64, 4), np.uint8))


# ------------------------------------------------------------------------------ embedding

def test_embeddings_equal_direct_onnxruntime(t1_backend, t1):
    model = t1_backend.recognizer.model_file
    faces = t1_backend.detect(t1)
    assert len(faces) == 6
    for face in faces:
        with _quiet_face_align():
            crop = norm_crop(t1, landmark=face.landmarks, image_size=112)   # on RGB: an RGB crop
        expected = direct_embedding(model, crop)
        assert face.embedding.dtype == np.float32 and face.embedding.shape == (512,)
        np.testing.assert_allclose(face.embedding, expected, atol=1e-5)
        # The comparison is sensitive to channel order: a BGR crop gives another vector.
        assert np.abs(direct_embedding(model, crop[:, :, ::-1].copy()) - expected).max() > 1e-2
    # One detect() embeds all faces in one batch; each stays its own.
    assert max(float(a.embedding @ b.embedding) for a in faces for b in faces if a is not b) < 0.9999


def test_embeddings_are_unit_norm(t1_backend, astro_backend, t1, astronaut):
    for face in t1_backend.detect(t1) + astro_backend.detect(astronaut):
        assert np.linalg.norm(face.embedding.astype(np.float64)) == pytest.approx(1.0, abs=1e-6)


def test_aligned_photo_embeds_as_itself(tmp_path):
    """Tom_Hanks_54745.png is already an ArcFace-aligned 112 crop: planting the template
    landmarks makes alignment the identity, so the backend's embedding must equal the
    network on the raw photo, with no alignment code involved on the expected side."""
    photo = rgb("Tom_Hanks_54745.png")
    write_tiny_pack(tmp_path, faces=[plant_face((112, 112), [0, 0, 112, 112], ARCFACE_TEMPLATE)])
    backend = InsightFaceBackend(models_dir=tmp_path)
    face, = backend.detect(photo)
    np.testing.assert_allclose(face.landmarks, ARCFACE_TEMPLATE, atol=1e-3)
    expected = direct_embedding(backend.recognizer.model_file, photo)
    np.testing.assert_allclose(face.embedding, expected, atol=1e-5)


def test_align_is_the_224_template_crop_in_rgb(astro_backend, astronaut):
    face, = astro_backend.detect(astronaut)
    crop = astro_backend.align(astronaut, face)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    expected = similarity_warp(astronaut, face.landmarks, 224).astype(int)
    # Float32 vs float64 landmarks move OpenCV's 1/32-pixel sampling grid a little.
    assert np.abs(crop.astype(int) - expected).mean() < 0.2
    # ... and that comparison would catch a BGR crop.
    assert np.abs(crop.astype(int) - expected[:, :, ::-1]).mean() > 5


def test_analyse_picks_largest_and_honours_error_policy(t1_backend, t1):
    best = t1_backend.analyse(t1)  # default: the detector's most confident face
    faces = t1_backend.detect(t1)
    np.testing.assert_allclose(best.bbox, max(faces, key=lambda f: f.score).bbox)
    result = t1_backend.analyse(t1, multi_face="largest")
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b, _ in T1_FACES]
    np.testing.assert_allclose(result.bbox, T1_FACES[int(np.argmax(areas))][0], atol=0.01)
    assert result.num_faces == 6 and result.crop.shape == (224, 224, 3)
    assert result.backend == "insightface"
    with pytest.raises(MultiFaceError):
        t1_backend.analyse(t1, multi_face="error")


def test_similarity_is_cosine(astro_backend):
    a = np.array([1.0, 0.0, 0.0], np.float32)
    b = np.array([3.0, 4.0, 0.0], np.float32)
    assert astro_backend.similarity(a, b) == pytest.approx(0.6)
    assert astro_backend.is_match(a, b) == (MATCH_COSINE <= 0.6)
    assert not astro_backend.is_match(a, np.array([0.0, 1.0, 0.0]))


# ------------------------------------------------------------------------- pack discovery

def _touch_pack(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "det_10g.onnx").write_bytes(b"x")
    return folder


def test_find_pack_search_order(tmp_path, monkeypatch):
    home_pack = _touch_pack(tmp_path / "home" / ".insightface" / "models" / "buffalo_l")
    assert find_pack(None) == home_pack
    env_pack = _touch_pack(tmp_path / "insightface_home" / "models" / "buffalo_l")
    assert find_pack(None) == env_pack
    models = tmp_path / "models"
    assert find_pack(models) == env_pack                       # models_dir without the pack
    sub_pack = _touch_pack(models / "buffalo_l")
    assert find_pack(models) == sub_pack
    assert find_pack(sub_pack) == sub_pack                     # the pack folder itself
    monkeypatch.delenv("INSIGHTFACE_HOME")
    assert find_pack(None) == home_pack


def test_missing_pack_says_where_files_go(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(UsageError) as err:
        InsightFaceBackend(models_dir=models)
    message = str(err.value)
    assert "det_10g.onnx" in message and "w600k_r50.onnx" in message
    assert str(models / "buffalo_l") in message and "INSIGHTFACE_HOME" in message


def test_incomplete_pack_names_the_missing_model(tmp_path):
    write_tiny_arcface(tmp_path / "buffalo_l" / "w600k_r50.onnx")
    (tmp_path / "buffalo_l" / "det_10g.onnx").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(UsageError) as err:
        InsightFaceBackend(models_dir=tmp_path)
    message = str(err.value)
    assert "no detection model" in message and "det_10g.onnx" in message
    assert "recognition model" not in message


def test_detector_without_landmarks_is_refused(tmp_path, monkeypatch):
    write_tiny_pack(tmp_path)
    monkeypatch.setattr(SCRFD, "_init_vars", _without_kps(SCRFD._init_vars))
    with pytest.raises(UsageError, match="5 landmarks"):
        InsightFaceBackend(models_dir=tmp_path)


def _without_kps(init_vars):
    def patched(self):
        init_vars(self)
        self.use_kps = False
    return patched


def test_tiny_scrfd_refuses_two_faces_in_one_cell(tmp_path):
    box = np.array([0.4, 0.4, 0.6, 0.6])
    with pytest.raises(ValueError, match="cell"):
        write_tiny_scrfd(tmp_path / "d.onnx", faces=[(box, np.zeros((5, 2))), (box + 0.01, np.zeros((5, 2)))])


# ------------------------------------------------------------------------------ providers

def test_cpu_providers():
    assert providers.onnx_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(UsageError, match="unknown device"):
        providers.onnx_providers("tpu")


def test_cuda_without_cuda_provider_is_loud(monkeypatch, tmp_path):
    monkeypatch.setattr(providers, "available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(UsageError, match=r"onnxruntime-gpu"):
        providers.onnx_providers("cuda")
    with pytest.raises(UsageError, match="CUDAExecutionProvider"):
        InsightFaceBackend(models_dir=tmp_path, device="cuda:0")   # before any pack lookup


def test_cuda_on_this_onnxruntime():
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert providers.onnx_providers("cuda")[0] == ("CUDAExecutionProvider", {"device_id": 0})
    else:
        with pytest.raises(UsageError, match="fmu\\[gpu\\]"):
            providers.onnx_providers("cuda")


def test_cuda_index_reaches_the_provider_options(monkeypatch):
    monkeypatch.setattr(providers, "available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers.onnx_providers("cuda:1") == [
        ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]


def test_onnxruntime_clash(monkeypatch):
    assert providers.onnxruntime_clash() is None     # this venv: onnxruntime alone
    monkeypatch.setattr(providers, "installed_onnxruntimes",
                        lambda: {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.32.0"})
    message = providers.onnxruntime_clash()
    assert "onnxruntime==1.32.0" in message and "onnxruntime-gpu==1.32.0" in message


def test_face_centred_past_the_last_cell_is_still_reported(tmp_path, astronaut):
    # Centre at 0.98 * 640 = 627 px would round to a cell beyond the 20x20 grid: clamped back.
    box = np.array([0.96, 0.96, 1.0, 1.0])
    write_tiny_pack(tmp_path, faces=[(box, np.full((5, 2), 0.98))])
    face, = InsightFaceBackend(models_dir=tmp_path).detect(astronaut)
    np.testing.assert_allclose(face.bbox, box * 512, atol=0.01)
    np.testing.assert_allclose(face.landmarks, np.full((5, 2), 0.98 * 512), atol=0.01)
