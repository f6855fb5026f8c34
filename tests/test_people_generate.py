"""`fmu generate` with rows of several people, end to end on the tiny preset and shipped photos:
two meshes in one condition, per-person scores, resume, bad rows, one-person rows unchanged."""

import shutil

import numpy as np
import polars as pl
import pytest
from cli_run import generate as run
from PIL import Image

from fmu.core.digests import file_digest
from fmu.core.faces import get_backend
from fmu.core.faces.crops import FRAME_SCALE, face_frame_box
from fmu.core.images import load_rgb
from fmu.core.runner.conditions import ConditionProvider
from fmu.manifests.demo import write_demo_inputs

FAST = ["--steps", "2", "--batch-size", "2"]
ROWS = [  # id, reference, layout, target
    ("duo", "astronaut.png|tom_hanks.png", None, None),
    ("solo", "astronaut.png", None, None),
    ("five", "|".join(["astronaut.png"] * 5), None, None),
    ("outside", "astronaut.png|tom_hanks.png", "0,0,0.5,1|0.5,0,1.5,1", None),
    ("noface", "astronaut.png|chelsea.png", None, None),
    ("targeted", "tom_hanks.png|astronaut.png", "0,0.25,0.5,0.75|0.5,0,1,1", "|t1.jpg"),
]


def _manifest(folder, rows):
    pl.DataFrame({"id": [r[0] for r in rows], "reference": [r[1] for r in rows],
                  "prompt": ["two friends at a party"] * len(rows), "layout": [r[2] for r in rows],
                  "target": [r[3] for r in rows], "seed": ["3"] * len(rows)},
                 schema={c: pl.String for c in ("id", "reference", "prompt", "layout", "target", "seed")}
                 ).write_csv(folder / "people.csv")
    return folder / "people.csv"


@pytest.fixture(scope="module")
def people_run(tmp_path_factory, fmu_home, photos):
    folder = tmp_path_factory.mktemp("people")
    inputs = folder / "in"
    write_demo_inputs(inputs)
    shutil.copyfile(photos["chelsea.png"], inputs / "chelsea.png")
    manifest = _manifest(inputs, ROWS)
    out = folder / "run"
    result = run([manifest, "--out", out, *FAST, "--save-conditions"])
    return inputs, manifest, out, result


def _records(out):
    return {r["id"]: r for r in pl.read_parquet(out / "results.parquet").to_dicts()}


def test_bad_rows_fail_with_clear_errors_and_the_others_complete(people_run):
    _, _, out, result = people_run
    assert result.exit_code == 1, result.output
    rec = _records(out)
    assert {i: r["status"] for i, r in rec.items()} == {
        "duo": "ok", "solo": "ok", "targeted": "ok", "five": "failed", "outside": "failed", "noface": "failed"}
    assert rec["five"]["error"] == "too_many_people: 5 people in reference; at most 4 per image"
    assert rec["outside"]["error"].startswith("box_outside: layout box 2 (0.5,0,1.5,1) is not inside the image")
    assert rec["noface"]["error"] == "reference[2] no_face: no face detected"


def test_two_people_condition_holds_each_persons_mesh_in_their_box(people_run, tmp_path):
    inputs, _, out, _ = people_run
    rec = _records(out)["duo"]
    assert rec["reference"] == f"{inputs / 'astronaut.png'}|{inputs / 'tom_hanks.png'}"
    assert rec["layout"] == "0,0,0.5,1|0.5,0,1,1"
    condition = np.asarray(Image.open(out / rec["condition"]))
    image = np.asarray(Image.open(out / rec["image"]))
    assert condition.shape == image.shape[:2] == (64, 64)
    # each half is that person's own condition at the box's size (a fresh cache: computed anew)
    backend = get_backend("dlib")
    provider = ConditionProvider(tmp_path / "cache", frame_scale=FRAME_SCALE)
    frames = []
    for name, half in (("astronaut.png", condition[:, :32]), ("tom_hanks.png", condition[:, 32:])):
        photo = load_rgb(inputs / name)
        landmarks = backend.analyse(photo).landmarks
        alone = provider.get(inputs / name, None, 32, 64, landmarks)
        np.testing.assert_array_equal(half, alone.condition)
        assert (half > 0).mean() > 0.1  # a face is drawn in each box
        frames.append(list(face_frame_box(landmarks, photo.shape, FRAME_SCALE)))
    assert rec["people_frames"] == frames
    # the tiny preset draws noise: no face in the output, said once per row and per person
    assert rec["people_id_similarity"] == [None, None]
    assert rec["id_similarity"] is None and rec["id_similarity_min"] is None
    assert rec["id_similarity_reason"] == "no_face: no face detected in the output"
    assert rec["people_pose_error_deg"] == [None, None] and rec["people_light_error"] == [None, None]
    assert rec["consistency_reason"] == ("reference[1]: no_face: no face found by the mediapipe face mesh (output); "
                                         "reference[2]: no_face: no face found by the mediapipe face mesh (output)")


def test_a_target_per_person_and_a_placed_box(people_run):
    inputs, _, out, _ = people_run
    rec = _records(out)["targeted"]
    assert rec["target"] == f"|{inputs / 't1.jpg'}"
    assert rec["target_stamp"].startswith("|") and len(rec["target_sha256"]) == 65
    condition = np.asarray(Image.open(out / rec["condition"]))
    # person 1 in the middle of the left half (rows 16..47), nothing drawn above or below that box
    assert condition[16:48, :32].any() and not condition[:16, :32].any() and not condition[48:, :32].any()
    assert condition[:, 32:].any()
    backend = get_backend("dlib")
    group = load_rgb(inputs / "t1.jpg")
    landmarks = max(backend.detect(group), key=lambda f: f.score).landmarks  # the target's best face
    assert rec["people_frames"][1] == list(face_frame_box(landmarks, group.shape, FRAME_SCALE))


def test_people_rows_resume(people_run):
    _, manifest, out, _ = people_run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    assert set(before) == {"duo_0.png", "solo_0.png", "targeted_0.png"}
    result = run([manifest, "--out", out, *FAST])
    assert result.exit_code == 1  # the bad rows are still bad
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")} == before
    assert "3 ok, 3 failed, 3 of them finished earlier and kept" in result.output


def test_a_changed_second_reference_makes_its_row_again(people_run, tmp_path):
    inputs, _, _, _ = people_run
    shutil.copyfile(inputs / "tom_hanks.png", inputs / "friend.png")
    manifest = _manifest(inputs, [("pair", "astronaut.png|friend.png", None, None)])
    out = tmp_path / "run"
    assert run([manifest, "--out", out, *FAST]).exit_code == 0
    first = (out / "images" / "pair_0.png").stat().st_mtime_ns
    assert run([manifest, "--out", out, *FAST]).exit_code == 0
    assert (out / "images" / "pair_0.png").stat().st_mtime_ns == first  # same bytes: kept
    shutil.copyfile(inputs / "astronaut.png", inputs / "friend.png")     # person 2 is someone else now
    assert run([manifest, "--out", out, *FAST]).exit_code == 0
    assert (out / "images" / "pair_0.png").stat().st_mtime_ns != first
    digests = _records(out)["pair"]["reference_sha256"].split("|")
    assert digests == [file_digest(inputs / "astronaut.png")] * 2


def test_one_person_rows_are_made_as_without_people_rows(people_run, tmp_path):
    inputs, _, out, _ = people_run
    alone = _manifest(inputs, [r for r in ROWS if r[0] == "solo"])
    again = tmp_path / "alone"
    assert run([alone, "--out", again, *FAST]).exit_code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out / "images" / "solo_0.png")),
                                  np.asarray(Image.open(again / "images" / "solo_0.png")))
    rec = _records(again)["solo"]
    assert rec["layout"] is None and rec["people_id_similarity"] is None


def test_score_reports_per_person_values(people_run):
    from fmu.core.scoring import ScoreOptions, score_run

    _, _, out, _ = people_run
    result = score_run(out, ScoreOptions(metrics=("facesim", "consistency")))
    scores = {r["id"]: r for r in result.scores.to_dicts()}
    assert scores["duo"]["facesim_dlib_people"] == [None, None] and scores["duo"]["status"] == "no_face"
    assert scores["duo"]["people_pose_error_deg"] == [None, None]
    assert "pose/light reference[2] output: no_face" in scores["duo"]["error"]
    assert scores["solo"]["facesim_dlib_people"] is None
    page = (out / "report.html").read_text()
    assert "reference[2]" in page and "person 2: FaceSim dlib –, pose err ° –, light err –" in page
