"""`fmu prepare` keeps each photo once (identical bytes, or a near-identical face in the same
identity folder) and says which face of a group photo it used (`--multi-face largest|skip`); the
preview outlines that face and shows the excluded photos with their reasons."""

import shutil

import numpy as np
import polars as pl
import pytest
from PIL import Image

from fmu.core.errors import UsageError
from fmu.core.faces import get_backend
from fmu.core.images import load_rgb
from fmu.training.prepare import NEAR_DUPLICATE_COSINE, PrepareConfig, run_prepare
from fmu.training.preview import FACE_COLOUR, overlay


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("dedupe") / "person"
    d.mkdir()
    shutil.copy(photos["astronaut.png"], d / "astronaut.png")
    shutil.copy(photos["astronaut.png"], d / "astronaut_copy.png")                    # the same bytes
    Image.open(photos["astronaut.png"]).convert("RGB").save(d / "astronaut_q90.jpg", quality=90)  # re-encoded
    shutil.copy(photos["tom_hanks.png"], d / "hanks.png")
    shutil.copy(photos["t1.jpg"], d / "group.jpg")                                     # several faces
    return d


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_duplicates_are_kept_once_and_the_largest_face_of_a_group_is_used(folder, tmp_path):
    summary = run_prepare(PrepareConfig(source=folder, out=tmp_path / "data", resolution=32, masks="given"))
    report = {r["id"]: r for r in pl.read_parquet(summary.report).to_dicts()}
    assert report["astronaut_copy"]["status"] == "excluded"
    assert report["astronaut_copy"]["reason"] == "duplicate_of: astronaut (identical bytes)"
    # the re-encoded copy: an independent embedding of both photos puts them above the threshold
    backend = get_backend("dlib")
    embed = {n: backend.analyse(load_rgb(folder / n), "largest").embedding
             for n in ("astronaut.png", "astronaut_q90.jpg", "hanks.png")}
    near = _cosine(embed["astronaut.png"], embed["astronaut_q90.jpg"])
    assert near > NEAR_DUPLICATE_COSINE > _cosine(embed["astronaut.png"], embed["hanks.png"])
    assert report["astronaut_q90"]["status"] == "excluded"
    assert report["astronaut_q90"]["reason"] == (f"duplicate_of: astronaut (face embedding cosine {near:.3f} > "
                                                 f"{NEAR_DUPLICATE_COSINE})")
    train = pl.read_parquet(summary.manifest)
    assert sorted(train["id"]) == ["astronaut", "group", "hanks"] and summary.failed == 2
    # the group photo: the biggest detected face, its box recorded
    faces = backend.detect(load_rgb(folder / "group.jpg"))
    assert len(faces) > 1 and report["group"]["num_faces"] == len(faces)
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    largest = max((np.asarray(f.bbox, float) for f in faces), key=area)
    np.testing.assert_allclose(report["group"]["face_box"], largest[:4])
    page = (tmp_path / "data" / "preview.html").read_text()
    assert f"{len(faces)} faces in the photo: the outlined one (the largest) is used" in page
    assert "<h2>Excluded (2)</h2>" in page and "duplicate_of: astronaut (identical bytes)" in page


def test_multi_face_skip_leaves_the_group_photo_out(folder, tmp_path):
    summary = run_prepare(PrepareConfig(source=folder, out=tmp_path / "data", resolution=32, masks="given",
                                        multi_face="skip"))
    report = {r["id"]: r for r in pl.read_parquet(summary.report).to_dicts()}
    assert report["group"]["status"] == "failed" and report["group"]["reason"].startswith("multi_face: ")
    assert "faces in the photo (--multi-face skip)" in report["group"]["reason"]
    assert sorted(pl.read_parquet(summary.manifest)["id"]) == ["astronaut", "hanks"]
    assert "multi_face: " in (tmp_path / "data" / "preview.html").read_text()


def test_the_face_used_is_outlined(astronaut):
    box = (100.0, 50.0, 300.0, 250.0)
    out = overlay(astronaut, [], side=256, face_box=box)   # 512 px -> 256: the box at half scale
    assert tuple(out[100, 50]) == FACE_COLOUR and tuple(out[125, 150]) == FACE_COLOUR   # left edge, top edge
    assert tuple(out[100, 100]) != FACE_COLOUR                                            # inside: the photo


@pytest.mark.parametrize("mode, kept", [("exact", ["astronaut", "astronaut_q90", "group", "hanks"]),
                                        ("off", ["astronaut", "astronaut_copy", "astronaut_q90", "group", "hanks"])])
def test_dedupe_exact_keeps_edited_copies_and_off_keeps_all(folder, tmp_path, mode, kept):
    summary = run_prepare(PrepareConfig(source=folder, out=tmp_path / "data", resolution=32, masks="given",
                                        dedupe=mode))
    assert sorted(pl.read_parquet(summary.manifest)["id"]) == kept
    assert summary.failed == 5 - len(kept)


def test_an_unknown_dedupe_mode_is_a_usage_error(folder, tmp_path):
    with pytest.raises(UsageError, match="--dedupe 'fuzzy': use one of near, exact, off"):
        run_prepare(PrepareConfig(source=folder, out=tmp_path / "data", dedupe="fuzzy"))
    assert not (tmp_path / "data").exists()


def test_prepare_refuses_the_torchrun_engine_before_reading_rows(folder, tmp_path):
    with pytest.raises(UsageError, match="--engine torchrun: fmu prepare runs on this machine's processes"):
        run_prepare(PrepareConfig(source=folder, out=tmp_path / "data", engine="torchrun"))
    assert not (tmp_path / "data").exists()
