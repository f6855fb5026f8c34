"""`fmu prepare --masks auto` (the default): caption phrases -> mesh masks -> the `masks` column
`fmu train` reads, per-row phrase reports, reuse on re-runs, given masks winning."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
from PIL import Image

ASTRONAUT = ("A smiling woman with short brown hair, full red lips, thin eyebrows, blue eyes and a small nose, "
             "in a space suit, no glasses")


@pytest.fixture(scope="module")
def tokenizer(tiny_preset):
    from transformers import CLIPTokenizer

    base, _ = tiny_preset
    return CLIPTokenizer.from_pretrained(base / "tokenizer")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, photos):
    from fmu.training.prepare import PrepareConfig, run_prepare

    root = tmp_path_factory.mktemp("auto")
    src = root / "src"
    src.mkdir()
    shutil.copy(photos["astronaut.png"], src / "astronaut.png")
    shutil.copy(photos["tom_hanks.png"], src / "hanks.png")
    shutil.copy(photos["chelsea.png"], src / "cat.png")
    face = np.zeros((512, 512), np.uint8)
    face[80:180, 170:280] = 255
    Image.fromarray(face).save(src / "face_box.png")
    rows = [
        {"id": "astronaut", "image": "astronaut.png", "caption": ASTRONAUT, "masks": ""},
        {"id": "plain", "image": "hanks.png", "caption": "a photo of a person", "masks": ""},
        {"id": "cat", "image": "cat.png", "caption": "a cat with blue eyes", "masks": ""},
        {"id": "given", "image": "astronaut.png", "caption": "red lips, her face close up",
         "masks": json.dumps([{"mask": "face_box.png", "phrase": "Face"}])},
        {"id": "twice", "image": "astronaut.png", "caption": "red lips, red lips", "masks": ""},
        {"id": "beard", "image": "hanks.png", "caption": "a man with a beard and big ears, frowning", "masks": ""},
    ]
    pl.DataFrame(rows).write_csv(src / "train.csv")
    cfg = PrepareConfig(source=src / "train.csv", out=root / "data", resolution=64)
    return cfg, run_prepare(cfg)


def _rows(path) -> dict:
    return {r["id"]: r for r in pl.read_parquet(path).to_dicts()}


def test_phrases_and_reasons_per_row(prepared):
    _, summary = prepared
    assert (summary.ok, summary.failed) == (5, 1)
    assert (summary.phrases, summary.phrases_masked) == (14, 12)
    report = _rows(summary.report)
    a = report["astronaut"]
    assert a["phrases"] == ["smiling", "short brown hair", "full red lips", "thin eyebrows", "blue eyes", "small nose",
                            "space suit"]
    assert a["phrases_masked"] == a["phrases"][:-1]
    assert a["phrases_unmasked"] == [{"phrase": "space suit",
                                      "reason": "not_supported: the mesh parser has no clothes region"}]
    assert report["plain"]["phrases"] == [] and report["plain"]["phrases_unmasked"] == []
    assert report["cat"]["status"] == "failed" and report["cat"]["reason"].startswith("no_face")
    assert report["cat"]["phrases"] is None                         # a failed row is not masked
    assert report["given"]["phrases"] == ["red lips", "face"]
    assert report["given"]["phrases_masked"] == ["red lips", "face"]
    beard = report["beard"]
    assert beard["phrases_masked"] == ["beard", "frowning"]
    assert [u["phrase"] for u in beard["phrases_unmasked"]] == ["big ears"]
    info = json.loads((summary.manifest.parent / "run.json").read_text())
    assert info["config"]["masks"] == "auto" and info["config"]["parser"] == "mesh"
    assert info["summary"]["phrases"] == 7 + 2 + 2 + 3 and info["summary"]["phrases_masked"] == 6 + 2 + 2 + 2
    assert info["summary"]["phrases_unmasked_by_reason"] == {"not_supported": 2}


def test_mask_files_are_the_parsers_regions(prepared, astronaut):
    from fmu.core.faces import get_backend
    from fmu.core.regions import get_parser

    cfg, summary = prepared
    train = _rows(summary.manifest)
    masks = train["astronaut"]["masks"]
    assert [m["phrase"] for m in masks] == ["smiling", "short brown hair", "full red lips", "thin eyebrows",
                                           "blue eyes", "small nose"]
    expected = get_parser("mesh").parse(astronaut, get_backend("dlib").analyse(astronaut).bbox)
    for entry, region in zip(masks, ("mouth", "hair", "lips", "eyebrows", "eyes", "nose")):
        path = cfg.out / entry["mask"]
        assert entry["mask"].startswith("masks/mesh-") and path.name.endswith(f"-{region}.png")
        assert entry["occurrence"] == 0 and entry["token_indices"] is None
        grey = np.asarray(Image.open(path))
        assert grey.shape == astronaut.shape[:2] and set(np.unique(grey)) == {0, 255}
        np.testing.assert_array_equal(grey == 255, expected.masks[region], err_msg=region)
    # "frowning" is the union of the regions that show a frown
    (frown,) = [m for m in train["beard"]["masks"] if m["phrase"] == "frowning"]
    assert frown["mask"].endswith("-eyebrows+forehead.png")
    # rows of one image share its files: "red lips" of three rows is one file
    lips = {m["mask"] for r in ("astronaut", "given", "twice") for m in train[r]["masks"] if "lips" in m["phrase"]}
    assert len(lips) == 1


def test_given_masks_win_and_repeats_stay_apart(prepared, tokenizer):
    from fmu.training.data import TrainingSet

    _, summary = prepared
    train = _rows(summary.manifest)
    given = train["given"]["masks"]
    assert [(m["phrase"], m["mask"].endswith("face_box.png")) for m in given] == [("Face", True), ("red lips", False)]
    twice = train["twice"]["masks"]
    assert [(m["phrase"], m["occurrence"]) for m in twice] == [("red lips", 0), ("red lips", 1)]
    assert twice[0]["mask"] == twice[1]["mask"]
    data = TrainingSet(summary.manifest, tokenizer, 64)
    samples = {data.rows[i]["id"]: data[i] for i in range(len(data))}
    first, second = samples["twice"].token_indices
    assert first and second and max(first) < min(second)


def test_auto_phrases_map_to_tokens_of_the_tiny_tokenizer(prepared, tokenizer):
    """The tiny preset's vocabulary has few whole words, but it is byte-level BPE: every phrase
    is spelled by some tokens, and training maps each phrase to exactly those."""
    from fmu.training.data import TrainingSet

    _, summary = prepared
    data = TrainingSet(summary.manifest, tokenizer, 64)
    index = [r["id"] for r in data.rows].index("astronaut")
    sample = data[index]
    ids = tokenizer(ASTRONAUT, truncation=True, max_length=77).input_ids
    for entry, tokens, mask in zip(data.rows[index]["masks"], sample.token_indices, sample.masks):
        spelled = "".join(tokenizer.convert_ids_to_tokens([ids[i] for i in tokens])).replace("</w>", "")
        assert tokens and spelled == entry["phrase"].lower().replace(" ", ""), entry["phrase"]
        assert mask.shape == (1, 64, 64) and 0 < float(mask.sum()) < 64 * 64


def test_rerun_reuses_the_mask_files(prepared, monkeypatch):
    from fmu.core.regions.mesh import MeshParser
    from fmu.training.prepare import run_prepare

    cfg, summary = prepared
    before = {p: p.stat().st_mtime_ns for p in (cfg.out / "masks").rglob("*") if p.is_file()}

    def refuse(self, image, box=None):
        raise AssertionError("parsed again instead of reusing the mask files")

    monkeypatch.setattr(MeshParser, "parse", refuse)
    again = run_prepare(cfg)
    assert pl.read_parquet(again.manifest).equals(pl.read_parquet(summary.manifest))
    assert {p: p.stat().st_mtime_ns for p in (cfg.out / "masks").rglob("*") if p.is_file()} == before


def test_masks_given_keeps_only_the_manifests_masks(prepared, tmp_path):
    from dataclasses import replace

    from fmu.core.errors import UsageError
    from fmu.training.prepare import run_prepare

    cfg, _ = prepared
    summary = run_prepare(replace(cfg, out=tmp_path / "given", masks="given"))
    train = _rows(summary.manifest)
    assert [m["phrase"] for m in train["given"]["masks"]] == ["Face"]
    assert all(not train[r]["masks"] for r in ("astronaut", "twice", "plain", "beard"))
    assert not (tmp_path / "given" / "masks").exists()
    assert pl.read_parquet(summary.report)["phrases"].null_count() == 6
    with pytest.raises(UsageError, match="--masks 'bogus'"):
        run_prepare(replace(cfg, out=tmp_path / "bogus", masks="bogus"))
    with pytest.raises(UsageError, match="use one of"):
        run_prepare(replace(cfg, out=tmp_path / "bogus", parser="bisenet"))


def test_two_workers_give_the_same_data(prepared, tmp_path):
    from dataclasses import replace

    from fmu.training.prepare import run_prepare

    cfg, summary = prepared
    other = run_prepare(replace(cfg, out=tmp_path / "w2", workers=2))
    assert pl.read_parquet(other.manifest).equals(pl.read_parquet(summary.manifest))
    assert pl.read_parquet(other.report).drop("seconds").equals(pl.read_parquet(summary.report).drop("seconds"))
    record = json.loads((tmp_path / "w2" / "run.json").read_text())
    assert record["timings"]["engine"] == "processes" and record["timings"]["workers"] == 2
    assert record["timings"]["units"] == 6 and record["timings"]["engine_workers"] == 2   # one row per unit
    assert not (tmp_path / "w2" / ".units").exists()   # the units' hand-over files are merged and gone
    for entry in [m for cell in pl.read_parquet(other.manifest)["masks"].to_list() for m in cell]:
        if entry["mask"].startswith("masks/"):
            assert (tmp_path / "w2" / entry["mask"]).read_bytes() == (cfg.out / entry["mask"]).read_bytes()
