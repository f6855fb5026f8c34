"""FaceSim on the ArcFace path (insightface pack layout, tiny planted ONNX stand-ins): batched
scoring equals the backend's own per-image embeddings, in its own column."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from fmu.core.images import save_png
from fmu.core.scoring import ScoreOptions, score_run
from fmu.core.scoring.face_batch import face_embeddings


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    from fmu.core.model.tiny_onnx import write_tiny_pack

    root = tmp_path_factory.mktemp("models")
    write_tiny_pack(root)
    return root


@pytest.fixture(scope="module")
def backend(pack):
    from fmu.core.faces import get_backend

    return get_backend("insightface", models_dir=pack, det_size=640)


def test_batched_arcface_equals_backend_detect(backend, astronaut):
    assert backend.embeds_crops    # the batched path is the one under test
    rng = np.random.default_rng(0)
    images = [astronaut, astronaut[:, ::-1].copy(), rng.integers(0, 255, (300, 400, 3), dtype=np.uint8),
              np.full((256, 256, 3), 100, np.uint8)]       # uniform: the planted detector finds nothing
    got = face_embeddings(backend, images, batch_size=3, workers=2)
    for img, g in zip(images, got):
        faces = backend.detect(img)
        assert g.num_faces == len(faces)
        if faces:
            best = max(faces, key=lambda f: f.score)
            np.testing.assert_allclose(g.embedding, best.embedding, atol=1e-5)
            assert np.linalg.norm(g.embedding) == pytest.approx(1.0, abs=1e-5)
        else:
            assert g.embedding is None
    assert got[3].embedding is None and got[0].embedding is not None


def test_run_scored_with_arcface_column_from_run_json(tmp_path, pack, backend, astronaut):
    run = tmp_path / "run"
    save_png(tmp_path / "ref.png", astronaut)
    save_png(run / "images" / "a_0.png", astronaut[::-1].copy())
    save_png(run / "images" / "a_1.png", np.full((512, 512, 3), 100, np.uint8))
    pl.DataFrame([dict(id="a", k=k, status="ok", error=None, seed=k, prompt="p", reference=str(tmp_path / "ref.png"),
                       target=None, image=f"images/a_{k}.png", condition=None) for k in (0, 1)]
                 ).write_parquet(run / "results.parquet")
    (run / "run.json").write_text(json.dumps({"face_backend": "insightface", "face_models": str(pack)}))
    result = score_run(run, ScoreOptions(metrics=("facesim",)))
    s = result.scores
    assert "facesim_arcface" in s.columns and "facesim_dlib" not in s.columns
    ref = max(backend.detect(astronaut), key=lambda f: f.score).embedding
    out = max(backend.detect(astronaut[::-1].copy()), key=lambda f: f.score).embedding
    expected = float(ref @ out / np.linalg.norm(ref) / np.linalg.norm(out))
    assert s["facesim_arcface"][0] == pytest.approx(expected, abs=1e-5)
    assert s["status"].to_list() == ["ok", "no_face"]
    m = result.summary["metrics"]["facesim_arcface"]
    assert m["mean_strict"] == pytest.approx(expected / 2, abs=1e-5)
    assert m["mean_detected"] == pytest.approx(expected, abs=1e-5)
    assert m["model"]["det_size"] == 640


def test_missing_pack_is_unavailable(tmp_path, astronaut):
    run = tmp_path / "run"
    save_png(tmp_path / "ref.png", astronaut)
    save_png(run / "images" / "a_0.png", astronaut)
    pl.DataFrame([dict(id="a", k=0, status="ok", error=None, seed=0, prompt="p", reference=str(tmp_path / "ref.png"),
                       target=None, image="images/a_0.png", condition=None)]).write_parquet(run / "results.parquet")
    opts = ScoreOptions(face_backends=["insightface", "dlib"], face_models=tmp_path / "empty", metrics=("facesim",))
    result = score_run(run, opts, backend_from_run=False)
    assert result.summary["metrics"]["facesim_arcface"]["available"] is False
    assert "not found" in result.summary["metrics"]["facesim_arcface"]["reason"]
    assert result.scores["facesim_dlib"][0] == pytest.approx(1.0, abs=1e-6)


def test_id_similarity_is_the_backends_own_on_both_paths(backend, astronaut):
    """`FaceBackend.id_similarity`, the value `fmu generate` writes per image: the cosine of the most
    confident faces, through the crop path (insightface) and through `detect` for a backend
    without crops; no face is a reason, not a number."""
    ref = max(backend.detect(astronaut), key=lambda f: f.score).embedding
    flipped = astronaut[::-1].copy()
    out = max(backend.detect(flipped), key=lambda f: f.score).embedding
    expected = float(ref @ out / np.linalg.norm(ref) / np.linalg.norm(out))
    value, reason = backend.id_similarity(ref, flipped)
    assert reason is None and value == pytest.approx(expected, abs=1e-5)

    from fmu.core.faces import FaceBackend

    class DetectOnly(FaceBackend):  # no best_face_crop / embed_crops: best_face uses detect
        name = "detect-only"

        def detect(self, image):
            return backend.detect(image)

        def similarity(self, a, b):
            return backend.similarity(a, b)

    assert not DetectOnly.embeds_crops
    value, reason = DetectOnly().id_similarity(ref, flipped)
    assert reason is None and value == pytest.approx(expected, abs=1e-6)
    blank = np.full((256, 256, 3), 100, np.uint8)
    assert DetectOnly().id_similarity(ref, blank) == backend.id_similarity(ref, blank) == (
        None, "no_face: no face detected in the output")
