"""Stage 1 (`--captioner`): tiny image-to-text models built from configs, saved and loaded back
through the folder path a user's model takes; captions cached by image content and model."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

# the tiny captioners' vocabulary: BERT's special tokens, then a few words of face captions
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "woman", "man", "with", "red", "lips", "brown", "hair",
         "blue", "eyes", "thin", "eyebrows", "nose", "smiling", "and"]


@pytest.fixture(scope="module")
def blip(tmp_path_factory):
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    folder = tmp_path_factory.mktemp("blip")
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), model_max_length=64)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    config = BlipConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 64, "pad_token_id": 0, "sep_token_id": 3,
                     "eos_token_id": 3, "bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]")},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8, "initializer_range": 0.02},  # BLIP's default 1e-10
        projection_dim=32)                                                     # would blind it to the image
    torch.manual_seed(4)  # a seed whose captions differ between the test images and name regions
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _reference_captions(folder, images):
    """What the saved model says, through transformers' own classes (greedy decoding)."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    model = BlipForConditionalGeneration.from_pretrained(folder).eval()
    processor = BlipProcessor.from_pretrained(folder)
    with torch.no_grad():
        ids = model.generate(**processor(images=images, return_tensors="pt"), max_new_tokens=40, do_sample=False)
    return [" ".join(t.split()) for t in processor.batch_decode(ids, skip_special_tokens=True)]


def test_captioner_matches_the_model(blip, astronaut):
    from fmu.training.captions import Captioner

    images = [astronaut, np.ascontiguousarray(astronaut[::-1])]
    captions = Captioner(str(blip)).caption(images)
    assert captions == _reference_captions(blip, images)
    assert all(captions) and captions[0] != captions[1]


def test_vision_encoder_decoder_folder_without_a_processor(tmp_path, astronaut):
    """A VisionEncoderDecoder folder holds an image processor and a tokenizer, no processor."""
    from transformers import (
        BertConfig,
        BertTokenizer,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessorPil,
    )

    from fmu.training.captions import Captioner

    (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizer(str(tmp_path / "vocab.txt"))
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
                  patch_size=8),
        BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=64, is_decoder=True, add_cross_attention=True))
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config=config).eval()
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = (
            tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.sep_token_id)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    images = ViTImageProcessorPil(size={"height": 32, "width": 32})
    images.save_pretrained(tmp_path)
    captioner = Captioner(str(tmp_path))
    with torch.no_grad():
        ids = model.generate(pixel_values=images(images=[astronaut], return_tensors="pt").pixel_values,
                             max_new_tokens=40, do_sample=False)
    assert captioner.caption([astronaut]) == [" ".join(tokenizer.decode(ids[0], skip_special_tokens=True).split())]


def test_prepare_captions_rows_without_one_and_caches_them(blip, tmp_path, photos, monkeypatch):
    from fmu.training.captions import Captioner
    from fmu.training.phrases import extract_phrases
    from fmu.training.prepare import DEFAULT_CAPTION, PrepareConfig, run_prepare

    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(photos["astronaut.png"], folder / "astronaut.png")
    shutil.copy(photos["tom_hanks.png"], folder / "hanks.png")
    (folder / "hanks.txt").write_text("a man with a beard\n")                  # a sidecar caption wins
    shutil.copy(photos["chelsea.png"], folder / "cat.png")
    (folder / "broken.png").write_bytes(b"not a png")
    cfg = PrepareConfig(source=folder, out=tmp_path / "data", resolution=64, captioner=str(blip))
    summary = run_prepare(cfg)
    expected = _reference_captions(blip, [np.asarray(Image.open(folder / n).convert("RGB"))
                                          for n in ("astronaut.png", "cat.png")])
    train = pl.read_parquet(summary.manifest).sort("id")
    captions = dict(zip(train["id"], train["caption"]))
    assert captions == {"astronaut": expected[0], "hanks": "a man with a beard"}
    report = pl.read_parquet(summary.report).sort("id")
    assert dict(zip(report["id"], report["caption_source"])) == {
        "astronaut": "captioner", "broken": "default", "cat": "captioner", "hanks": "sidecar"}
    astronaut = report.filter(pl.col("id") == "astronaut").row(0, named=True)
    assert astronaut["phrases"] == [p.text for p in extract_phrases(expected[0])] and astronaut["phrases"]
    cached = sorted((tmp_path / "data" / "cache" / "captions").rglob("*.txt"))
    assert sorted(p.read_text() for p in cached) == sorted(expected)     # astronaut and cat, not the broken file

    def refuse(self, images):
        raise AssertionError("captioned again instead of reading the cache")

    monkeypatch.setattr(Captioner, "caption", refuse)
    again = run_prepare(cfg)
    assert dict(zip(*pl.read_parquet(again.manifest).sort("id").select("id", "caption"))) == captions
    # without a captioner the default caption stays
    plain = run_prepare(PrepareConfig(source=folder, out=tmp_path / "plain", resolution=64))
    captions = dict(zip(*pl.read_parquet(plain.manifest).sort("id").select("id", "caption")))
    assert captions["astronaut"] == DEFAULT_CAPTION


def test_broken_captioner_is_a_usage_error(tmp_path, blip, photos):
    from typer.testing import CliRunner

    from fmu.app import app

    folder = tmp_path / "img"
    folder.mkdir()
    shutil.copy(photos["tom_hanks.png"], folder / "hanks.png")
    broken = tmp_path / "broken"
    shutil.copytree(blip, broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 100)
    runner = CliRunner()
    for source, message in ((broken, "cannot load an image-to-text model"), (tmp_path / "none", "no such folder")):
        result = runner.invoke(app, ["prepare", str(folder), "--out", str(tmp_path / "d"), "--captioner", str(source)])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "d" / "train.parquet").exists()
