"""fmu prepare and the training manifest: phrase -> tokens, masks in CSV and Parquet, bad rows."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module")
def tokenizer(tiny_preset):
    from transformers import CLIPTokenizer

    base, _ = tiny_preset
    return CLIPTokenizer.from_pretrained(base / "tokenizer")


def _spelled(tokenizer, caption, indices):
    ids = tokenizer(caption).input_ids
    return "".join(tokenizer.convert_ids_to_tokens([ids[i] for i in indices])).replace("</w>", " ").strip()


def test_phrase_tokens_with_tiny_tokenizer_and_repeated_phrase(tokenizer):
    from fmu.training.data import phrase_token_indices

    caption = "a man and a woman in a garden, the man wears a red hat"
    ids = tokenizer(caption).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    every = phrase_token_indices(tokenizer, caption, "man")
    first = phrase_token_indices(tokenizer, caption, "man", occurrence=0)
    second = phrase_token_indices(tokenizer, caption, "man", occurrence=1)
    # independent: walk the token strings, rebuilding words at "</w>" ends
    words, current = [], []
    for pos, tok in enumerate(tokens[1:-1], start=1):
        current.append(pos)
        if tok.endswith("</w>"):
            words.append(("".join(tokens[p] for p in current).replace("</w>", ""), current))
            current = []
    man_positions = [pos for word, pos in words if word == "man"]
    assert len(man_positions) == 2
    assert first == man_positions[0] and second == man_positions[1]
    assert every == first + second
    woman = next(pos for word, pos in words if word == "woman")
    assert not set(woman) & set(every)            # "man" inside "woman" is not a match
    assert phrase_token_indices(tokenizer, caption, "red hat") == \
        [p for word, pos in words if word in ("red", "hat") for p in pos]
    assert _spelled(tokenizer, caption, phrase_token_indices(tokenizer, caption, "The Man", 0)) == "the man"
    # the offsets path and the prefix-tokenisation fallback agree
    for phrase in ("man", "a woman", "garden", "red hat"):
        assert phrase_token_indices(tokenizer, caption, phrase, method="prefix") == \
            phrase_token_indices(tokenizer, caption, phrase, method="offsets")
    with pytest.raises(ValueError, match="does not occur"):
        phrase_token_indices(tokenizer, caption, "dog")
    with pytest.raises(ValueError, match="occurrence 2"):
        phrase_token_indices(tokenizer, caption, "man", occurrence=2)


def test_phrase_tokens_past_the_token_limit_are_dropped(tokenizer):
    from fmu.training.data import phrase_token_indices

    caption = " ".join(["photo"] * 80) + " face"
    assert phrase_token_indices(tokenizer, caption, "face") == []
    assert phrase_token_indices(tokenizer, caption, "face", method="prefix") == []


def test_masks_cell_formats():
    from fmu.training.data import parse_masks

    cell = [{"mask": "m.png", "phrase": "face"}, {"mask": "n.png", "token_indices": [3, 4]}]
    parsed = parse_masks(json.dumps(cell))
    assert parsed == parse_masks(cell)
    assert parsed[1]["token_indices"] == [3, 4] and parsed[0]["occurrence"] is None
    assert parse_masks(None) == [] and parse_masks("") == []
    with pytest.raises(ValueError):
        parse_masks("[{not json")
    with pytest.raises(ValueError):
        parse_masks([{"phrase": "face"}])


def _face_mask(path, image_path):
    from fmu.core.faces import get_backend

    image = np.asarray(Image.open(image_path).convert("RGB"))
    face = max(get_backend("dlib").detect(image), key=lambda f: f.area)
    mask = np.zeros(image.shape[:2], np.uint8)
    x1, y1, x2, y2 = [int(round(v)) for v in face.bbox]
    mask[max(y1, 0):y2, max(x1, 0):x2] = 255
    Image.fromarray(mask).save(path)
    return mask


def test_prepare_folder_reports_bad_rows_and_csv_parquet_agree(tmp_path, photos, tokenizer):
    from fmu.core.faces.cache import content_hash
    from fmu.training.data import TrainingSet, square_box
    from fmu.training.prepare import DEFAULT_CAPTION, PrepareConfig, run_prepare

    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(photos["astronaut.png"], folder / "astronaut.png")
    shutil.copy(photos["tom_hanks.png"], folder / "hanks.png")
    (folder / "hanks.txt").write_text("a portrait of a man, face close up\n")
    shutil.copy(photos["chelsea.png"], folder / "cat.png")                       # no face
    (folder / "broken.jpg").write_bytes(photos["t1.jpg"].read_bytes()[:2000])   # truncated
    summary = run_prepare(PrepareConfig(source=folder, out=tmp_path / "data", resolution=64))
    assert (summary.total, summary.ok, summary.failed) == (4, 2, 2)
    assert summary.report == tmp_path / "data" / "report.parquet"
    report = pl.read_parquet(summary.report).sort("id")
    status = dict(zip(report["id"], report["status"]))
    info = json.loads((tmp_path / "data" / "run.json").read_text())
    assert info["command"] == "prepare" and info["summary"]["status_counts"] == {"failed": 2, "ok": 2}
    assert info["config"]["resolution"] == 64 and "torch" in info["versions"]
    reasons = dict(zip(report["id"], report["reason"]))
    assert status == {"astronaut": "ok", "broken": "failed", "cat": "failed", "hanks": "ok"}
    assert reasons["cat"].startswith("no_face") and reasons["broken"].startswith("corrupt_image")
    train = pl.read_parquet(summary.manifest).sort("id")
    assert train["id"].to_list() == ["astronaut", "hanks"]
    assert train["caption"].to_list() == [DEFAULT_CAPTION, "a portrait of a man, face close up"]
    assert train["image_sha256"][1] == content_hash((folder / "hanks.png").read_bytes())
    assert all((tmp_path / "data" / f).is_file()
               for f in train["face_file"].to_list() + train["shading_file"].to_list())

    # the same images as a manifest with masks, once as CSV (JSON cell) and once as Parquet
    mask = _face_mask(folder / "hanks_mask.png", folder / "hanks.png")
    caption = "a portrait of a man, face close up, the face smiling"
    masks = [{"mask": "hanks_mask.png", "phrase": "face", "occurrence": None, "token_indices": None},
             {"mask": "hanks_mask.png", "phrase": None, "occurrence": None, "token_indices": [1, 2]}]
    rows = {"id": ["hanks", "nope"], "image": ["hanks.png", "hanks.png"], "caption": [caption, caption]}
    dog = json.dumps([{"mask": "hanks_mask.png", "phrase": "dog"}])
    pl.DataFrame({**rows, "masks": [json.dumps(masks), dog]}).write_csv(folder / "t.csv")
    pl.DataFrame({**rows, "masks": [masks, [{"mask": "hanks_mask.png", "phrase": "dog", "occurrence": None,
                                            "token_indices": None}]]}).write_parquet(folder / "t.parquet")
    out_csv = run_prepare(PrepareConfig(source=folder / "t.csv", out=tmp_path / "csv", resolution=64))
    out_pq = run_prepare(PrepareConfig(source=folder / "t.parquet", out=tmp_path / "pq", resolution=64))
    assert out_csv.ok == out_pq.ok == 1
    bad = pl.read_parquet(out_csv.report).filter(pl.col("id") == "nope")["reason"][0]
    assert bad.startswith("phrase_not_in_caption")
    a, b = TrainingSet(out_csv.manifest, tokenizer, 64)[0], TrainingSet(out_pq.manifest, tokenizer, 64)[0]
    assert a.token_indices == b.token_indices
    ids = tokenizer(caption).input_ids
    assert [tokenizer.convert_ids_to_tokens(ids[i]) for i in a.token_indices[0]] == ["face</w>", "face</w>"]
    assert a.token_indices[1] == [1, 2]
    assert torch.equal(a.masks[0], b.masks[0]) and a.masks[0].shape == (1, 64, 64)
    # the mask lands in the training frame: the 112 px crop resized to 64 (square already)
    expected = np.asarray(Image.fromarray(mask).resize((64, 64), Image.Resampling.BICUBIC)) / 255.0
    assert np.allclose(a.masks[0][0].numpy(), expected, atol=1 / 255)
    assert torch.equal(a.pixels, b.pixels) and a.pixels.shape == (3, 64, 64)
    assert a.id_embedding.shape == (128,) and a.condition.shape == (3, 64, 64)
    box = square_box(np.array([7.0, 27.0, 94.0, 113.0]), 112, 112, 64)
    assert np.allclose(box, [4.0, 15.428572, 53.714287, 64.0])


def test_prepare_cli_exit_code_and_resume(tmp_path, photos):
    from typer.testing import CliRunner

    from fmu.app import app
    folder = tmp_path / "img"
    folder.mkdir()
    shutil.copy(photos["tom_hanks.png"], folder / "hanks.png")
    shutil.copy(photos["chelsea.png"], folder / "cat.png")
    runner = CliRunner()
    first = runner.invoke(app, ["prepare", str(folder), "--out", str(tmp_path / "d"), "--resolution", "64"])
    assert first.exit_code == 1, first.output
    assert "1 usable, 1 excluded" in first.output and "no_face" in first.output
    cached = sorted(p.stat().st_mtime_ns for p in (tmp_path / "d" / "cache").rglob("*.npz"))
    second = runner.invoke(app, ["prepare", str(folder), "--out", str(tmp_path / "d"), "--resolution", "64"])
    assert second.exit_code == 1
    # resumed from the content-hash caches: no analysis file was rewritten
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "d" / "cache").rglob("*.npz")) == cached


def test_shipped_example_manifest_parses(tokenizer):
    from pathlib import Path

    from fmu.training.data import parse_masks, phrase_token_indices, read_training_manifest

    df = read_training_manifest(Path(__file__).resolve().parents[1] / "manifests/examples/train_example.csv")
    assert df.columns == ["id", "image", "caption", "masks"]
    masks = [parse_masks(m) for m in df["masks"]]
    assert [len(m) for m in masks] == [2, 1, 0]
    caption = df["caption"][1]
    (hanks,) = masks[1]
    assert hanks["occurrence"] == 1
    assert phrase_token_indices(tokenizer, caption, hanks["phrase"], hanks["occurrence"]) == \
        phrase_token_indices(tokenizer, caption, "the man")[-len(phrase_token_indices(tokenizer, caption, "man", 1)):]


def test_shipped_example_prepares_offline_after_demo_inputs(tmp_path, photos):
    """The documented commands: `fmu demo-inputs manifests/examples` writes the photos and the
    masks train_example.csv names, then `fmu prepare` keeps every row with every mask."""
    from pathlib import Path

    from fmu.manifests.demo import DEMO_MASKS, write_demo_inputs
    from fmu.training.prepare import PrepareConfig, run_prepare

    examples = tmp_path / "examples"
    examples.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "manifests/examples/train_example.csv", examples)
    write_demo_inputs(examples)
    named = {m["mask"] for cell in pl.read_csv(examples / "train_example.csv")["masks"].drop_nulls()
             for m in json.loads(cell)}
    assert named == set(DEMO_MASKS) and all((examples / name).is_file() for name in named)
    face = _face_mask(tmp_path / "expected.png", examples / "tom_hanks.png")
    np.testing.assert_array_equal(np.asarray(Image.open(examples / "masks/hanks_face.png")), face)
    suit = np.asarray(Image.open(examples / "masks/astronaut_suit.png"))
    assert suit.shape == (512, 512) and suit[:170].max() == 0 and suit[200:, 60:380].min() == 255
    summary = run_prepare(PrepareConfig(source=examples / "train_example.csv", out=tmp_path / "data", resolution=64))
    assert (summary.ok, summary.failed) == (3, 0)
    train = pl.read_parquet(summary.manifest).sort("id")
    # the given masks, plus (default --masks auto) the mesh parser's mask for "smiling" in hanks's caption;
    # the astronaut's "space suit" and "face" phrases keep their given masks
    assert dict(zip(train["id"], map(len, train["masks"].to_list()))) == {"astronaut": 2, "hanks": 2, "group": 0}
    auto = train.filter(pl.col("id") == "hanks")["masks"][0].to_list()[1]
    assert auto["phrase"] == "smiling"
    assert auto["mask"].startswith("masks/mesh-") and auto["mask"].endswith("-mouth.png")


def test_train_commands_are_typer_commands():
    from typer.testing import CliRunner

    from fmu.app import app  # the real app: its handler turns usage errors into exit 2

    runner = CliRunner()
    assert "--resume" in runner.invoke(app, ["train", "--help"]).output
    assert "--from" in runner.invoke(app, ["finetune", "--help"]).output
    bad = runner.invoke(app, ["train", "--data", "/nonexistent", "--max-steps", "1"])
    assert bad.exit_code == 2 and "no prepared training manifest" in bad.output


def test_prepare_folder_caption_not_utf8_fails_only_that_row(tmp_path, photos):
    from fmu.training.prepare import PrepareConfig, run_prepare

    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(photos["tom_hanks.png"], folder / "hanks.png")
    (folder / "hanks.txt").write_text("a portrait of a man\n")
    shutil.copy(photos["astronaut.png"], folder / "grey.png")
    (folder / "grey.txt").write_bytes(b"\xff\xfe bad")
    summary = run_prepare(PrepareConfig(source=folder, out=tmp_path / "data", resolution=64))
    assert (summary.total, summary.ok, summary.failed) == (2, 1, 1)
    report = pl.read_parquet(summary.report).sort("id")
    assert report["status"].to_list() == ["failed", "ok"]
    assert report["reason"][0] == "bad_caption: caption file grey.txt is not UTF-8 text"
    train = pl.read_parquet(summary.manifest)
    assert train["id"].to_list() == ["hanks"] and train["caption"].to_list() == ["a portrait of a man"]


BAD_MASK_SPECS = {  # id -> (mask entry, the reason prepare gives)
    "occurrence_list": ({"phrase": "face", "occurrence": [1]},
                        "bad_masks: mask face.png: 'occurrence' must be an integer >= 0, not [1]"),
    "occurrence_true": ({"phrase": "face", "occurrence": True},
                        "bad_masks: mask face.png: 'occurrence' must be an integer >= 0, not True"),
    "occurrence_negative": ({"phrase": "face", "occurrence": -1},
                            "bad_masks: mask face.png: 'occurrence' must be an integer >= 0, not -1"),
    "occurrence_missing": ({"phrase": "face", "occurrence": 5},
                           "bad_masks: mask face.png: phrase 'face' occurs 1 time(s); occurrence 5 does not exist"),
    "indices_int": ({"token_indices": 5},
                    "bad_masks: mask face.png: 'token_indices' must be a list of integers >= 0, not 5"),
    "indices_negative": ({"token_indices": [2, -1]},
                         "bad_masks: mask face.png: 'token_indices' must be a list of integers >= 0, not [2, -1]"),
    "indices_past_77": ({"token_indices": [3, 500]},
                        "bad_masks: mask face.png: token_indices [500] outside 0..76 (the 77-token caption)"),
    "phrase_number": ({"phrase": 5}, "bad_masks: mask face.png: 'phrase' must be a string, not 5"),
    "mask_smaller": ({"mask": "small.png", "phrase": "face"},
                     "bad_mask: mask small.png is 56x56 but the image is 112x112"),
}


def test_prepare_checks_mask_specs_as_training_will_use_them(tmp_path, photos, tokenizer):
    from fmu.training.data import TrainingSet
    from fmu.training.prepare import PrepareConfig, run_prepare

    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(photos["tom_hanks.png"], folder / "hanks.png")
    mask = _face_mask(folder / "face.png", folder / "hanks.png")
    Image.fromarray(mask).resize((56, 56)).save(folder / "small.png")
    caption = "a photo of a man, face close up"
    good = {"ok_phrase": {"phrase": "face", "occurrence": 0}, "ok_indices": {"token_indices": [0, 76]}}
    specs = {**good, **{k: v[0] for k, v in BAD_MASK_SPECS.items()}}
    pl.DataFrame({"id": list(specs), "image": ["hanks.png"] * len(specs), "caption": [caption] * len(specs),
                  "masks": [json.dumps([{"mask": "face.png", **spec}]) for spec in specs.values()]}
                 ).write_csv(folder / "t.csv")
    # given masks only: the caption's "face" would also get an auto mask in the token-indices row
    summary = run_prepare(PrepareConfig(source=folder / "t.csv", out=tmp_path / "data", resolution=64, masks="given"))
    assert (summary.ok, summary.failed) == (2, len(BAD_MASK_SPECS))
    report = pl.read_parquet(summary.report)
    reasons = dict(zip(report["id"], report["reason"]))
    assert {k: reasons[k] for k in BAD_MASK_SPECS} == {k: v[1] for k, v in BAD_MASK_SPECS.items()}
    assert reasons["ok_phrase"] is None and reasons["ok_indices"] is None
    data = TrainingSet(summary.manifest, tokenizer, 64)
    assert sorted(r["id"] for r in data.rows) == ["ok_indices", "ok_phrase"]
    tokens = {data.rows[i]["id"]: data[i].token_indices for i in range(len(data))}
    ids = tokenizer(caption).input_ids
    assert [tokenizer.convert_ids_to_tokens(ids[i]) for i in tokens["ok_phrase"][0]] == ["face</w>"]
    assert tokens["ok_indices"] == [[0, 76]]


def test_training_set_refuses_explicit_tokens_past_the_caption(tmp_path, photos, tokenizer):
    """A manifest prepared before prepare checked token positions fails with a clear message."""
    from fmu.training.data import TrainingSet
    from fmu.training.prepare import PrepareConfig, run_prepare

    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(photos["tom_hanks.png"], folder / "hanks.png")
    _face_mask(folder / "face.png", folder / "hanks.png")
    pl.DataFrame({"image": ["hanks.png"], "caption": ["a face"],
                  "masks": [json.dumps([{"mask": "face.png", "token_indices": [2]}])]}).write_csv(folder / "t.csv")
    summary = run_prepare(PrepareConfig(source=folder / "t.csv", out=tmp_path / "data", resolution=64))
    df = pl.read_parquet(summary.manifest)
    masks = [[{**m, "token_indices": [2, 500]} for m in row] for row in df["masks"].to_list()]
    df.with_columns(pl.Series("masks", masks, dtype=df.schema["masks"])).write_parquet(summary.manifest)
    with pytest.raises(ValueError, match=r"^token_indices \[500\] outside 0\.\.76 \(the 77-token caption\)$"):
        TrainingSet(summary.manifest, tokenizer, 64)[0]


def test_a_training_manifest_is_read_as_generation_manifests_are(tmp_path):
    """core/manifest's reader: the separator is sniffed, and a record that cannot be read fails its
    own row (with the reader's reason) instead of the whole file."""
    from pathlib import Path

    from fmu.training.prepare import source_rows

    manifest = tmp_path / "train.csv"
    manifest.write_bytes(b"image;caption\na.png;a photo\nb.png;one;too many\nc.png;caf\xe9\nd.png;last\n")
    rows = source_rows(manifest)
    assert [Path(r["image"]).name for r in rows[:2]] == ["a.png", "b.png"] and len(rows) == 4
    assert rows[0]["caption"] == "a photo" and rows[0]["problem"] is None and rows[3]["problem"] is None
    kind, why = rows[1]["problem"]
    assert kind == "malformed_row" and "line 3" in why
    assert rows[2]["problem"][0] == "not_utf8" and "line 4" in rows[2]["problem"][1]
