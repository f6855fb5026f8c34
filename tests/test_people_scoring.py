"""Scores of images with several people (core/scoring/person_scores.py): faces matched to references by
an optimal assignment, per-person identity, pose and light; `fmu generate` and `fmu score` agree."""

import itertools
import json

import numpy as np
import polars as pl
import pytest
from PIL import Image

from fmu.core.faces import get_backend
from fmu.core.faces.cache import FaceCache
from fmu.core.faces.matching import assign, identity_scores
from fmu.core.images import load_rgb, save_png
from fmu.core.manifest.validate import Row
from fmu.core.model.settings import Settings
from fmu.core.runner import people_row as run_people
from fmu.core.runner.conditions import ConditionProvider
from fmu.core.runner.plan import Job
from fmu.core.scoring import ScoreOptions, score_run


def test_assignment_is_optimal_where_greedy_is_not():
    # greedy takes 0.9 first and leaves person 2 with 0.1; the best total pairs them the other way
    assert assign([[0.9, 0.8], [0.85, 0.1]]) == [1, 0]
    assert assign(np.zeros((2, 0))) == [None, None]
    rng = np.random.default_rng(0)
    for people, faces in [(2, 3), (3, 3), (4, 2), (3, 5)]:
        table = rng.random((people, faces))
        match = assign(table)
        best = max(sum(table[p, f] for p, f in zip(perm_people, perm_faces))
                    for perm_people in itertools.permutations(range(people), min(people, faces))
                    for perm_faces in itertools.permutations(range(faces), min(people, faces)))
        assert sum(table[p, f] for p, f in enumerate(match) if f is not None) == pytest.approx(best)
        assert sum(f is None for f in match) == max(0, people - faces)
        assert len({f for f in match if f is not None}) == min(people, faces)


@pytest.fixture(scope="module")
def duo(photos):
    """Two shipped photos side by side: the astronaut in the left half, Tom Hanks in the right
    (dlib also finds a weak false face on her suit: the assignment must not give it to anyone)."""
    astronaut, hanks = load_rgb(photos["astronaut.png"]), load_rgb(photos["tom_hanks.png"])
    canvas = np.full((512, 512, 3), 200, np.uint8)
    canvas[:, :256] = astronaut[:, 60:316]
    canvas[100:356, 256:] = np.asarray(Image.fromarray(hanks).resize((256, 256), Image.Resampling.BICUBIC))
    return canvas


def _dlib_faces(image):
    """Every face's dlib descriptor, computed here directly with dlib (the independent reference)."""
    import dlib
    import face_recognition_models as frm

    image = np.ascontiguousarray(image)
    predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    rects, scores, _ = dlib.get_frontal_face_detector().run(image, 0, 0.0)
    return [np.asarray(encoder.compute_face_descriptor(image, predictor(image, r))) for r in rects], scores


def test_each_reference_gets_its_own_face(duo, photos):
    backend = get_backend("dlib")
    refs = [backend.analyse(load_rgb(photos[n])).embedding for n in ("astronaut.png", "tom_hanks.png")]
    faces = [f.embedding for f in backend.detect(duo)]
    assert len(faces) == 3  # the astronaut, Tom Hanks, and dlib's weak false face on the suit
    found = identity_scores(backend, refs, faces)
    direct, _ = _dlib_faces(duo)
    expected = [max(1 - np.linalg.norm(ref - face) for face in direct) for ref in refs]
    np.testing.assert_allclose(found.values, expected, atol=1e-5)
    assert found.reason is None and all(v > 0.4 for v in found.values)  # both matches by dlib's threshold
    swapped = identity_scores(backend, refs[::-1], faces)
    assert swapped.values == found.values[::-1]  # reference order, whatever the image order
    only_hanks = duo.copy()
    only_hanks[:, :256] = 200
    alone = identity_scores(backend, refs, [f.embedding for f in backend.detect(only_hanks)])
    assert alone.values[0] is None and alone.values[1] == pytest.approx(found.values[1], abs=1e-3)
    assert alone.reason == "missing: no face in the output for reference[1] (1 face(s) for 2 people)"


def test_generate_and_score_give_the_same_per_person_values(duo, photos, tmp_path):
    """The scores `fmu generate` writes for a two-person image (here: the photo pair as the
    output) are the ones `fmu score` computes from the run folder."""
    backend = get_backend("dlib")
    references = [photos["astronaut.png"], photos["tom_hanks.png"]]
    row = Row(index=0, id="duo", reference=f"{references[0]}|{references[1]}", prompt="two friends",
              layout="0,0,0.5,1|0.5,0,1,1")
    job = Job(row=row, k=0, seed=1, settings=Settings(width=512, height=512))
    cache, conditions = FaceCache(tmp_path / "cache", backend), ConditionProvider(tmp_path / "cache", frame_scale=5.0)
    record = {"id": "duo", "k": 0, "row": 0, "status": "ok", "prompt": "two friends", "image": "images/duo_0.png",
              "reference": str(row.reference), "target": None}
    made = run_people.prepare(job, record, cache, conditions.get, True, "best", None)
    assert made.request.people.conditions.shape == (2, 512, 512)
    record.update(run_people.scores(backend, conditions, row.people, made.analyses, made.condition, duo, "-"))
    assert all(v is not None and v > 0.4 for v in record["people_id_similarity"])
    assert record["id_similarity"] == pytest.approx(np.mean(record["people_id_similarity"]))
    assert record["id_similarity_min"] == min(record["people_id_similarity"])
    assert None not in record["people_pose_error_deg"] and None not in record["people_light_error"]
    assert record["pose_error_deg"] == pytest.approx(np.sqrt(np.mean(np.square(record["people_pose_error_deg"]))))

    run = tmp_path / "run"
    save_png(run / "images" / "duo_0.png", duo)
    from fmu.core.runner.results import SCHEMA

    pl.DataFrame([{c: record.get(c) for c in SCHEMA}], schema=SCHEMA).write_parquet(run / "results.parquet")
    (run / "run.json").write_text(json.dumps({"face_backend": "dlib"}))
    result = score_run(run, ScoreOptions(metrics=("facesim", "consistency")))
    scores = result.scores.to_dicts()[0]
    facesim = result.summary["metrics"]["facesim_dlib"]
    assert (facesim["n_people_rows"], facesim["n"], facesim["match_rate_strict"]) == (1, 1, 1.0)
    assert facesim["mean_strict"] == pytest.approx(record["id_similarity"], abs=1e-6)
    assert scores["status"] == "ok"
    np.testing.assert_allclose(scores["facesim_dlib_people"], record["people_id_similarity"], atol=1e-6)
    assert scores["facesim_dlib"] == pytest.approx(record["id_similarity"], abs=1e-6)
    assert scores["facesim_dlib_min"] == pytest.approx(record["id_similarity_min"], abs=1e-6)
    assert scores["facesim_dlib_match"] is True and scores["faces_dlib"] == 3
    np.testing.assert_allclose(scores["people_pose_error_deg"], record["people_pose_error_deg"], atol=1e-6)
    np.testing.assert_allclose(scores["people_light_error"], record["people_light_error"], atol=1e-6)
    page = (run / "report.html").read_text()
    first = record["people_id_similarity"][0]
    assert f"person 1: FaceSim dlib {first:.3f}, pose err ° {record['people_pose_error_deg'][0]:.1f}" in page


def test_images_and_manifest_form_scores_rows_of_several_people(duo, photos, tmp_path):
    import shutil

    from fmu.core.scoring import score_images

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("astronaut.png", "tom_hanks.png"):
        shutil.copyfile(photos[name], inputs / name)
    for name in ("duo.png", "swapped.png", "bad.png"):
        save_png(tmp_path / "images" / name, duo)
    pair, swapped = "astronaut.png|tom_hanks.png", "tom_hanks.png|astronaut.png"
    pl.DataFrame({"id": ["duo", "swapped", "bad"], "reference": [pair, swapped, pair], "prompt": ["two friends"] * 3,
                  "layout": [None, "0.5,0,1,1|0,0,0.5,1", "0,0,0.5,1|0.5,0,2,1"]}).write_csv(inputs / "m.csv")
    result = score_images(tmp_path / "images", inputs / "m.csv", opts=ScoreOptions(metrics=("facesim",)))
    by = {r["id"]: r for r in result.scores.to_dicts()}
    assert by["duo"]["status"] == "ok" and by["duo"]["layout"] == "0,0,0.5,1|0.5,0,1,1"
    assert all(v > 0.4 for v in by["duo"]["facesim_dlib_people"])
    assert by["swapped"]["facesim_dlib_people"] == pytest.approx(by["duo"]["facesim_dlib_people"][::-1])
    assert by["bad"]["status"] == "failed" and by["bad"]["error"].startswith("box_outside: layout box 2")
