"""Public corpus, issue 23 item 3: one huge caption (one phrase x 5000) and a caption with more
phrases than an image keeps masks for. Prepare fails the huge row with a reason and keeps the
first phrases of the long one (the rest listed with `too_many_phrases`, in the preview too);
training leaves over-bound rows out and tokenises each caption once per row."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest

from fmu.training.data import (
    MAX_CAPTION_CHARS,
    MAX_MASKS_PER_IMAGE,
    TrainingSet,
    phrase_token_indices,
)

HUGE = "a woman with short wavy brown hair, " * 5000            # 180 kB: one phrase x 5000
MANY = ", ".join(["red lips"] * (MAX_MASKS_PER_IMAGE + 8))       # 40 phrases, under the length bound


class CountingTokenizer:
    """A tokenizer that counts its calls (everything else is the wrapped one's)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, photos):
    from fmu.training.prepare import PrepareConfig, run_prepare

    root = tmp_path_factory.mktemp("bounds")
    src = root / "src"
    src.mkdir()
    shutil.copy(photos["astronaut.png"], src / "astronaut.png")
    many_given = json.dumps([{"mask": "astronaut.png", "phrase": "red lips"}] * (MAX_MASKS_PER_IMAGE + 1))
    rows = [{"id": "huge", "image": "astronaut.png", "caption": HUGE, "masks": ""},
            {"id": "many", "image": "astronaut.png", "caption": MANY, "masks": ""},
            {"id": "given", "image": "astronaut.png", "caption": "red lips", "masks": many_given}]
    pl.DataFrame(rows).write_csv(src / "train.csv")
    cfg = PrepareConfig(source=src / "train.csv", out=root / "data", resolution=64)
    return run_prepare(cfg)


def test_huge_caption_and_too_many_phrases_in_prepare(prepared):
    assert len(HUGE) > 150_000 and len(MANY) < MAX_CAPTION_CHARS
    report = {r["id"]: r for r in pl.read_parquet(prepared.report).to_dicts()}
    assert report["huge"]["status"] == "failed"
    assert report["huge"]["reason"].startswith("caption_too_long: 180000 characters (at most 2000")
    assert report["given"]["status"] == "failed"
    assert report["given"]["reason"].startswith("too_many_masks: 33 masks (at most 32")
    many = report["many"]
    assert many["status"] == "ok" and len(many["phrases"]) == MAX_MASKS_PER_IMAGE + 8
    assert len(many["phrases_masked"]) == MAX_MASKS_PER_IMAGE
    dropped = many["phrases_unmasked"]
    assert [d["phrase"] for d in dropped] == ["red lips"] * 8
    assert all(d["reason"].startswith("too_many_phrases:") for d in dropped)
    train = pl.read_parquet(prepared.manifest).to_dicts()
    assert [r["id"] for r in train] == ["many"]
    assert [m["occurrence"] for m in train[0]["masks"]] == list(range(MAX_MASKS_PER_IMAGE))
    preview = (prepared.manifest.parent / "preview.html").read_text()
    assert preview.count("red lips: too_many_phrases") == 8


@pytest.fixture(scope="module")
def over_bounds(prepared, tmp_path_factory):
    """The prepared data with two rows edited past the bounds (data prepared before them)."""
    df = pl.read_parquet(prepared.manifest)
    row = df.to_dicts()[0]
    huge = {**row, "id": "huge", "caption": HUGE}
    crowded = {**row, "id": "crowded", "masks": row["masks"] + row["masks"][:1]}
    path = prepared.manifest.parent / "edited.parquet"
    pl.DataFrame([row, huge, crowded], schema=df.schema).write_parquet(path)
    return path


def test_training_leaves_rows_over_the_bounds_out(over_bounds, tiny_preset):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_preset[0] / "tokenizer")
    dataset = TrainingSet(over_bounds, tokenizer, 64)
    assert len(dataset) == 1 and dataset.rows[0]["id"] == "many"
    assert [(i, why.split(":")[0]) for i, why in dataset.refused] == [("huge", "caption_too_long"),
                                                                      ("crowded", "too_many_masks")]


@pytest.mark.parametrize("kind", ["fast", "slow"])
def test_a_caption_is_tokenised_once_per_row(over_bounds, tiny_preset, kind):
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    cls = CLIPTokenizerFast if kind == "fast" else CLIPTokenizer
    plain = cls.from_pretrained(tiny_preset[0] / "tokenizer")
    spy = CountingTokenizer(plain)
    sample = TrainingSet(over_bounds, spy, 64)[0]
    caption = MANY
    expected = [phrase_token_indices(plain, caption, "red lips", k) for k in range(MAX_MASKS_PER_IMAGE)]
    assert sample.token_indices == expected
    assert sample.input_ids.tolist() == plain(caption, padding="max_length", truncation=True,
                                              max_length=plain.model_max_length).input_ids
    visible = sum(1 for e in expected if e)
    assert 0 < visible < MAX_MASKS_PER_IMAGE      # later phrases are past the 77 tokens
    if kind == "fast":
        assert spy.calls == 1                      # ids and every phrase's positions from one call
    else:
        # no offsets: one call for the ids, then each prefix once, none past the truncation
        assert spy.calls <= 1 + 2 * (visible + 1)
