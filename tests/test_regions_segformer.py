"""The `segformer:<folder>` region parser: a tiny SegFormer built from a config, saved with
save_pretrained and loaded back through the path a user's folder takes. Classes are found by
their names in the model's own id2label, whatever their order."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from fmu.core.errors import UsageError
from fmu.core.regions import get_parser

# CelebAMask-HQ's 19 classes as one published copy spells them; fmu's region for each (None: none)
CELEBAMASK = {"background": None, "skin": "skin", "nose": "nose", "eye_g": "eyeglasses", "l_eye": "eyes",
              "r_eye": "eyes", "l_brow": "eyebrows", "r_brow": "eyebrows", "l_ear": "ears", "r_ear": "ears",
              "mouth": "mouth", "u_lip": "upper_lip", "l_lip": "lower_lip", "hair": "hair", "hat": "hat",
              "ear_r": "earrings", "neck_l": "necklace", "neck": "neck", "cloth": "clothes"}
# another copy's spellings of the same classes (normalised by the parser: case, spaces)
OTHER_SPELLING = {"l_eye": "Left Eye", "r_eye": "right_eye", "l_brow": "left-eyebrow", "u_lip": "Upper Lip",
                  "eye_g": "eyeglasses", "neck_l": "necklace", "cloth": "clothes"}


def _build(folder, names: list[str], seed: int = 0):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from fmu.core.regions.segformer import _processor_class

    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                             patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=16, num_labels=len(names), id2label=dict(enumerate(names)),
                             label2id={n: i for i, n in enumerate(names)})
    torch.manual_seed(seed)
    model = SegformerForSemanticSegmentation(config).eval()
    model.save_pretrained(folder)
    _processor_class()(size={"height": 64, "width": 64}).save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """Two copies of one checkpoint: the classes in a shuffled order, and in another shuffled order
    with other spellings (its classifier rows permuted to match), like the published copies."""
    root = tmp_path_factory.mktemp("segformer")
    names = list(CELEBAMASK)
    order_a = list(np.random.default_rng(1).permutation(len(names)))
    a_names = [names[i] for i in order_a]
    model = _build(root / "a", a_names)
    perm = list(np.random.default_rng(2).permutation(len(names)))  # copy b's class k = copy a's class perm[k]
    b_names = [OTHER_SPELLING.get(a_names[i], a_names[i]) for i in perm]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["decode_head.classifier.weight"] = state["decode_head.classifier.weight"][perm]
    state["decode_head.classifier.bias"] = state["decode_head.classifier.bias"][perm]
    other = type(model)(type(model.config)(**{**model.config.to_dict(), "id2label": dict(enumerate(b_names)),
                                              "label2id": {n: i for i, n in enumerate(b_names)}}))
    other.load_state_dict(state)
    other.save_pretrained(root / "b")
    shutil.copy(root / "a" / "preprocessor_config.json", root / "b")
    return root / "a", root / "b", a_names


def test_regions_follow_the_models_own_labels(copies, astronaut):
    """Square photo and no box: the frame is the photo, so the parser's masks must equal the
    model's argmax split by label name, computed here directly."""
    from transformers import SegformerForSemanticSegmentation

    from fmu.core.regions.segformer import _processor_class

    folder, _, names = copies
    parser = get_parser(f"segformer:{folder}")
    result = parser.parse(astronaut, None)
    model = SegformerForSemanticSegmentation.from_pretrained(folder).eval()
    processor = _processor_class().from_pretrained(folder)
    with torch.no_grad():
        out = model(**processor(images=[astronaut], return_tensors="pt"))
    labels = processor.post_process_semantic_segmentation(out, target_sizes=[astronaut.shape[:2]])[0].numpy()
    assert len(np.unique(labels)) >= 8
    expected = {}
    for index, name in enumerate(names):  # model.config.id2label, as saved
        region = CELEBAMASK[name]
        if region is not None:
            expected[region] = expected.get(region, np.zeros(labels.shape, bool)) | (labels == index)
    expected["lips"] = expected["upper_lip"] | expected["lower_lip"]
    expected["mouth"] = expected["lips"] | expected["mouth"]
    expected["skin"] = expected["skin"] | expected["nose"]
    expected["face"] = (expected["skin"] | expected["eyes"] | expected["eyebrows"] | expected["mouth"]
                        | expected["eyeglasses"])
    produced = 0
    for region, mask in expected.items():
        if mask.sum() >= 16:
            np.testing.assert_array_equal(result.masks[region], mask, err_msg=region)
            produced += 1
        else:
            assert region not in result.masks and result.missing[region].startswith("empty")
    assert produced >= 6
    assert result.missing["forehead"].startswith("not_supported")   # no such class in this family
    assert set(parser.regions) >= {"hair", "eyes", "lips", "clothes", "eyeglasses", "neck"}


def test_copies_with_other_label_orders_give_the_same_masks(copies, astronaut):
    a, b, _ = copies
    labels_a = json.loads((a / "config.json").read_text())["id2label"]
    assert labels_a != json.loads((b / "config.json").read_text())["id2label"]
    box = (180, 80, 270, 175)
    first = get_parser(f"segformer:{a}").parse(astronaut, box)
    second = get_parser(f"segformer:{b}").parse(astronaut, box)
    assert set(first.masks) == set(second.masks) and len(first.masks) >= 6
    for region, mask in first.masks.items():
        np.testing.assert_array_equal(mask, second.masks[region], err_msg=region)


def test_box_parses_the_face_frame_only(copies, astronaut):
    from fmu.core.regions import FaceFrame

    folder, _, _ = copies
    parser = get_parser(f"segformer:{folder}")
    box = (180, 80, 270, 175)
    boxed = parser.parse(astronaut, box)
    frame = FaceFrame.around(box, astronaut.shape)
    inside = np.zeros(astronaut.shape[:2], bool)
    inside[max(frame.top, 0):frame.top + frame.side, max(frame.left, 0):frame.left + frame.side] = True
    alone = parser.parse(frame.crop(astronaut), None)  # the frame's pixels as a photo of their own
    for region, mask in boxed.masks.items():
        assert not mask[~inside].any()
        np.testing.assert_array_equal(mask, frame.paste(alone.masks[region]), err_msg=region)


def test_broken_folders_are_one_line_usage_errors(tmp_path, copies):
    folder, _, _ = copies
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    no_weights = tmp_path / "no_weights"
    shutil.copytree(folder, no_weights)
    (no_weights / "model.safetensors").unlink()
    cut = tmp_path / "cut"
    shutil.copytree(folder, cut)
    (cut / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:200])
    other_model = tmp_path / "clip"
    other_model.mkdir()
    (other_model / "config.json").write_text(json.dumps({"model_type": "clip"}))
    unknown = tmp_path / "unknown"
    _build(unknown, ["cat", "dog", "sky"])
    cases = {str(tmp_path / "missing"): "no such folder", str(garbage): "cannot load", str(no_weights): "cannot load",
             str(cut): "cannot load", str(other_model): "not segformer", str(unknown): "none of its labels",
             "someone/not-cached": "not in the Hugging Face cache"}
    for source, message in cases.items():
        with pytest.raises(UsageError, match=message) as err:
            get_parser(f"segformer:{source}")
        assert "\n" not in str(err.value) and source in str(err.value)
    for spec, message in (("segformer", "needs a model"), ("mesh:x", "no argument"), ("bisenet:x", "use one of")):
        with pytest.raises(UsageError, match=message):
            get_parser(spec)


def test_prepare_with_a_segformer_folder(copies, tmp_path, photos):
    """The CLI path: `fmu prepare --parser segformer:<folder>` masks what the parser has (hair,
    clothes) that the mesh parser has not; a broken folder stops the run with exit code 2."""
    import polars as pl
    from typer.testing import CliRunner

    from fmu.app import app

    folder, _, _ = copies
    images = tmp_path / "img"
    images.mkdir()
    shutil.copy(photos["astronaut.png"], images / "astronaut.png")
    (images / "astronaut.txt").write_text("a woman with short hair in an orange suit, wearing a hat")
    runner = CliRunner()
    ok = runner.invoke(app, ["prepare", str(images), "--out", str(tmp_path / "d"), "--resolution", "64",
                             "--parser", f"segformer:{folder}"])
    assert ok.exit_code == 0, ok.output
    assert "caption phrases masked" in ok.output and "preview.html" in ok.output
    report = pl.read_parquet(tmp_path / "d" / "report.parquet").row(0, named=True)
    assert report["phrases"] == ["short hair", "orange suit", "hat"]
    assert set(report["phrases_masked"]) | {u["phrase"] for u in report["phrases_unmasked"]} == set(report["phrases"])
    train = pl.read_parquet(tmp_path / "d" / "train.parquet")["masks"][0].to_list()
    assert all(m["mask"].startswith("masks/segformer-") for m in train) and train
    bad = runner.invoke(app, ["prepare", str(images), "--out", str(tmp_path / "e"), "--parser",
                              f"segformer:{tmp_path / 'nowhere'}"])
    assert bad.exit_code == 2 and "no such folder" in bad.output
    assert not (tmp_path / "e" / "train.parquet").exists()
