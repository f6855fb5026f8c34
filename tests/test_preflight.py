"""Option checks come first: every option and every path or name a user gives is checked before the
output folder is touched or a progress bar is drawn (also when nothing is left to run), and parts
that do not fit the adapter are named before any weight loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cli_run
import polars as pl
import pytest
import torch

FAST = ["--steps", "1", "--batch-size", "2", "--no-shading"]


def invoke(*args):
    return cli_run.invoke(*args, env={"COLUMNS": "400"})  # wide: each error stays on one line


def one_error(result, *fragments: str) -> str:
    """The result is exit 2 with exactly one line of output, `error: ...`, holding every fragment."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("preflight")
    shutil.copy(photos["tom_hanks.png"], folder / "hanks.png")
    pl.DataFrame({"id": ["h"], "reference": ["hanks.png"], "prompt": ["a photo"]}).write_csv(folder / "m.csv")
    (folder / "empty").mkdir()
    (folder / "junk.safetensors").write_text("not a safetensors file")
    return folder


@pytest.fixture(scope="module")
def encoder_48(tmp_path_factory):
    """A CLIP vision config 48 wide (the tiny preset's adapter reads 32-wide states): config only."""
    from transformers import CLIPVisionConfig

    folder = tmp_path_factory.mktemp("encoder48")
    CLIPVisionConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                     image_size=32, patch_size=8).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def base_cross_48(tmp_path_factory, tiny_preset):
    """The tiny base with its UNet config claiming cross-attention width 48, and NO UNet weights: a
    check that needs weights cannot pass here, so the mismatch must be found from the config."""
    base, _ = tiny_preset
    folder = tmp_path_factory.mktemp("base48") / "base"
    shutil.copytree(base, folder)
    config = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps({**config, "cross_attention_dim": 48}))
    for weights in (folder / "unet").glob("*.safetensors"):
        weights.unlink()
    return folder


@pytest.fixture(scope="module")
def adapter_512(tmp_path_factory, tiny_preset):
    """A FaceID adapter on the tiny base that takes 512-d (ArcFace) embeddings."""
    from fmu.core.model.facemakeup import FaceMakeUp

    base, _ = tiny_preset
    path = tmp_path_factory.mktemp("adapter512") / "adapter.safetensors"
    FaceMakeUp.from_base(base, id_embed_dim=512, lora_rank=4).save_pretrained(path)
    return path


@pytest.mark.parametrize("case", ["adapter_missing", "adapter_junk", "base_path_missing", "base_hub_id_not_cached",
                                  "base_folder_not_diffusers", "image_encoder_empty", "vae_empty", "devices_mps",
                                  "eta_out_of_range", "renderer_pytorch3d", "insightface_without_pack",
                                  "adapter_lora_missing", "offload_on_cpu", "base_config_empty"])
def test_unusable_option_is_one_line_before_out_exists(case, inputs, tiny_preset, monkeypatch, tmp_path):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "no-insightface"))
    base, adapter = tiny_preset
    single = tmp_path / "model.safetensors"
    single.write_bytes(Path(base / "unet" / "diffusion_pytorch_model.safetensors").read_bytes())
    extra, fragment = {
        "adapter_missing": (["--adapter", inputs / "nope.safetensors"], "nope.safetensors: no such file"),
        "adapter_junk": (["--adapter", inputs / "junk.safetensors"], "junk.safetensors"),
        "base_path_missing": (["--base-model", "/no/such/base", "--adapter", adapter], "no such file or folder"),
        "base_hub_id_not_cached": (["--base-model", "nobody/no-such-model", "--adapter", adapter],
                                   "local Hugging Face cache"),
        "base_folder_not_diffusers": (["--base-model", inputs / "empty", "--adapter", adapter], "no UNet config"),
        "image_encoder_empty": (["--image-encoder", inputs / "empty"], "no CLIP image encoder"),
        "vae_empty": (["--vae", inputs / "empty"], "--vae"),
        "devices_mps": (["--devices", "mps"], "device 'mps' requested"),  # fp16 / bf16 run on the CPU now
        "eta_out_of_range": (["--eta", "2"], "--eta 2.0"),
        "renderer_pytorch3d": (["--renderer", "pytorch3d"], "--renderer pytorch3d"),
        "insightface_without_pack": (["--face-backend", "insightface"], "insightface pack 'buffalo_l' not found"),
        "adapter_lora_missing": (["--adapter-lora", inputs / "nope_lora.safetensors"], "--adapter-lora"),
        "offload_on_cpu": (["--offload"], "--offload"),
        "base_config_empty": (["--base-model", single, "--base-config", inputs / "empty", "--adapter", adapter],
                              "--base-config"),
    }[case]
    fast = [f for f in FAST if f != "--no-shading"] if case == "renderer_pytorch3d" else FAST  # shading renders
    out = tmp_path / "out"
    one_error(invoke("generate", inputs / "m.csv", "--out", out, *fast, *extra), fragment)
    assert not out.exists()


def test_options_are_checked_when_nothing_is_left_to_run(inputs, tiny_preset, tmp_path):
    out = tmp_path / "out"
    assert invoke("generate", inputs / "m.csv", "--out", out, *FAST).exit_code == 0
    # the lock is taken before the checks (a second run is refused at once) and names its holder:
    # OUT/.lock is rewritten, every other file stays as it was
    def files():
        return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"}

    before = files()
    one_error(invoke("generate", inputs / "m.csv", "--out", out, *FAST, "--adapter", inputs / "nope.safetensors"),
              "no such file")
    one_error(invoke("generate", inputs / "m.csv", "--out", out, *FAST, "--image-encoder", inputs / "empty"),
              "no CLIP image encoder")
    assert files() == before and len(before) > 3


PROBE = """
import json, sys
sys.argv = ["fmu", *json.loads(sys.argv[1])]
from fmu.app import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
print("PROBE=" + json.dumps({"code": code, "imported": sorted(m for m in ("torch", "diffusers", "transformers")
                                                               if m in sys.modules)}))
"""


def test_a_finished_job_re_runs_without_the_model_libraries(inputs, tiny_preset, tmp_path):
    """Every image done: the re-run checks its options and answers from the results alone, without
    importing torch, diffusers or transformers; with one image gone, the same command makes it again."""
    import subprocess
    import sys

    out = tmp_path / "out"
    args = ["generate", str(inputs / "m.csv"), "--out", str(out), *FAST]
    assert invoke(*args).exit_code == 0
    image = out / "images" / "h_0.png"
    made = image.stat().st_mtime_ns
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=root, capture_output=True, text=True,
                         timeout=600)
    probe = json.loads(next(x for x in res.stdout.splitlines() if x.startswith("PROBE="))[len("PROBE="):])
    assert probe == {"code": 0, "imported": []}, res.stderr[-2000:]
    assert "1 ok, 0 failed, 1 of them finished earlier and kept" in " ".join(res.stdout.split())
    assert image.stat().st_mtime_ns == made
    assert json.loads((out / "run.json").read_text())["summary"]["skipped"] == 1
    image.unlink()  # work again: the tokenizer and the model load, the image is made again
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert image.is_file() and pl.read_parquet(out / "results.parquet")["status"].to_list() == ["ok"]
    assert json.loads((out / "run.json").read_text())["summary"]["skipped"] == 0


def test_validate_with_an_unusable_tokenizer_is_one_line(inputs):
    one_error(invoke("validate", inputs / "m.csv", "--tokenizer", inputs / "empty"), "--tokenizer",
              "no CLIP tokenizer there")


# -- mismatched parts -----------------------------------------------------------------------------

def test_dlib_with_a_512d_adapter_is_refused_before_loading(inputs, tiny_preset, adapter_512, tmp_path):
    base, _ = tiny_preset
    line = one_error(invoke("generate", inputs / "m.csv", "--out", tmp_path / "out", *FAST, "--base-model", base,
                            "--adapter", adapter_512, "--face-backend", "dlib"),
                     "--face-backend dlib gives 128-d face embeddings", "expects 512-d (insightface's ArcFace)")
    assert "mat1" not in line and not (tmp_path / "out").exists()


def test_insightface_with_the_tiny_128d_adapter_is_refused(inputs, tiny_preset, tmp_path):
    from fmu.core.model.tiny_onnx import write_tiny_pack

    write_tiny_pack(tmp_path / "models", dim=512)
    one_error(invoke("generate", inputs / "m.csv", "--out", tmp_path / "out", *FAST, "--face-backend", "insightface",
                     "--face-models", tmp_path / "models"),
              "--face-backend insightface gives 512-d face embeddings", "expects 128-d (dlib's)")


def test_image_encoder_of_another_width_is_refused(inputs, encoder_48, tmp_path):
    one_error(invoke("generate", inputs / "m.csv", "--out", tmp_path / "out", *FAST, "--image-encoder", encoder_48),
              f"the image encoder {encoder_48} is 48 wide", "reads 32-wide CLIP states", "--image-encoder")


def test_base_of_another_cross_attention_width_is_refused_from_its_config(inputs, tiny_preset, base_cross_48,
                                                                          tmp_path):
    _, adapter = tiny_preset
    one_error(invoke("generate", inputs / "m.csv", "--out", tmp_path / "out", *FAST, "--base-model", base_cross_48,
                     "--adapter", adapter, "--face-backend", "dlib"),
              "has cross-attention width 48", "was made for 32", "--base-model")


def test_doctor_reports_the_same_mismatches(tiny_preset, adapter_512, encoder_48, monkeypatch, tmp_path):
    from fmu.core.doctor import diagnose

    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "no-insightface"))
    base, adapter = tiny_preset
    bad = diagnose(base_model=str(base), adapter=str(adapter_512), face_backend="dlib")
    check = bad.find("adapter", "parts fit")
    assert check.ok is False and check.required and bad.exit_code == 1
    assert "--face-backend dlib gives 128-d face embeddings" in check.detail
    encoder = diagnose(adapter=str(adapter), image_encoder=str(encoder_48)).find("adapter", "parts fit")
    assert encoder.ok is False and "is 48 wide" in encoder.detail
    good = diagnose(base_model=str(base), adapter=str(adapter), face_backend="dlib")
    assert good.find("adapter", "parts fit").ok and good.exit_code == 0
    assert "face embedding, image encoder, cross-attention width(s) match" in good.find("adapter", "parts fit").detail


def test_doctor_has_the_image_encoder_flag_it_tells_users_to_pass(tiny_preset, encoder_48):
    from fmu.core.doctor import diagnose

    hint = diagnose().find("weights", "CLIP ViT-H image encoder").detail
    assert "fmu doctor --image-encoder DIR" in hint
    result = invoke("doctor", "--image-encoder", encoder_48)
    assert result.exit_code == 0 and "hidden width 48" in result.output, result.output
    assert invoke("doctor", "--image-encoder", encoder_48.parent / "nothing").exit_code == 1


def test_adapter_widths_from_the_ip_adapter_layout(tmp_path):
    """An h94 / authors'-style file (nested pickle or flat safetensors): widths from tensor shapes."""
    from safetensors.torch import save_file

    from fmu.core.model.parts import adapter_widths

    image_proj = {"proj.0.weight": torch.zeros(1024, 512), "norm.weight": torch.zeros(768),
                  "perceiver_resampler.proj_in.weight": torch.zeros(768, 1280)}
    torch.save({"image_proj": image_proj, "ip_adapter": {}}, tmp_path / "model.bin")
    save_file({f"image_proj.{k}": v for k, v in image_proj.items()}, tmp_path / "flat.safetensors")
    for name in ("model.bin", "flat.safetensors"):
        widths = adapter_widths(tmp_path / name)
        assert (widths.id_embed_dim, widths.clip_hidden_dim, widths.embed_dims) == (512, 1280, 768), name


# -- the other commands ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared(tmp_path_factory, photos, tiny_preset):
    from fmu.training.prepare import PrepareConfig, run_prepare

    src = tmp_path_factory.mktemp("preflight_faces")
    shutil.copy(photos["tom_hanks.png"], src / "hanks.png")
    summary = run_prepare(PrepareConfig(source=src, out=src / "data", resolution=64, masks="given"))
    assert summary.ok == 1
    return src


@pytest.mark.parametrize("case", ["renderer", "insightface", "parser"])
def test_prepare_checks_its_options_first(case, prepared, monkeypatch, tmp_path):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "no-insightface"))
    extra, fragment = {"renderer": (["--renderer", "pytorch3d"], "--renderer pytorch3d"),
                       "insightface": (["--face-backend", "insightface"], "insightface pack"),
                       "parser": (["--parser", f"segformer:{tmp_path / 'none'}"], "--parser")}[case]
    one_error(invoke("prepare", prepared, "--out", tmp_path / "data", *extra), fragment)
    assert not (tmp_path / "data").exists()


def test_prepare_survives_symlink_loops_and_dangling_links(prepared, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(prepared / "hanks.png", folder / "hanks.png")
    (folder / "a.png").symlink_to("b.png")
    (folder / "b.png").symlink_to("a.png")
    (folder / "self.jpg").symlink_to("self.jpg")
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "up.png").symlink_to("..")  # a folder link: never walked
    result = invoke("prepare", folder, "--out", tmp_path / "data", "--resolution", "64", "--masks", "given")
    assert result.exit_code == 1, result.output
    report = pl.read_parquet(tmp_path / "data" / "report.parquet").sort("id")
    reasons = dict(zip(report["id"], report["reason"]))
    assert reasons["hanks"] is None
    assert reasons["a"] == "not_a_file: a.png is a symlink loop"
    assert reasons["b"] == "not_a_file: b.png is a symlink loop"
    assert reasons["self"] == "not_a_file: self.jpg is a symlink loop"
    assert reasons["gone"].startswith("not_a_file: gone.png is a link to nothing")
    assert reasons["up"].startswith("not_a_file:") and "not a regular file" in reasons["up"]
    assert pl.read_parquet(tmp_path / "data" / "train.parquet")["id"].to_list() == ["hanks"]


@pytest.mark.parametrize("case", ["base", "init_adapter", "image_encoder", "id_model", "data"])
def test_train_checks_its_inputs_before_the_run_folder(case, prepared, inputs, tmp_path):
    extra, fragment = {"base": (["--base-model", "/no/such/base"], "no such file or folder"),
                       "init_adapter": (["--init-adapter", inputs / "nope.safetensors"], "no such file"),
                       "image_encoder": (["--image-encoder", inputs / "empty"], "no CLIP image encoder"),
                       "id_model": (["--id-model", inputs / "nope.onnx"], "--id-model"),
                       "data": ([], "no prepared training manifest")}[case]
    data = inputs / "empty" if case == "data" else prepared / "data"
    one_error(invoke("train", "--data", data, "--out", tmp_path / "run", *extra), fragment)
    assert not (tmp_path / "run").exists()


def test_train_refuses_data_prepared_for_another_embedding_width(prepared, adapter_512, tmp_path):
    one_error(invoke("train", "--data", prepared / "data", "--out", tmp_path / "run", "--init-adapter", adapter_512),
              "holds 128-d face embeddings", "expects 512-d", "--face-backend insightface")
    assert not (tmp_path / "run").exists()


def test_finetune_refuses_a_backend_the_adapter_cannot_take_before_preparing(prepared, adapter_512, tmp_path):
    one_error(invoke("finetune", "--from", adapter_512, "--data", prepared, "--out", tmp_path / "ft"),
              "--face-backend dlib gives 128-d face embeddings", "expects 512-d")
    assert not (tmp_path / "ft").exists()  # nothing prepared, nothing written


@pytest.mark.parametrize("case", ["clip", "dino", "fid", "lpips", "face_models", "device"])
def test_score_checks_every_path_it_is_given(case, inputs, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    extra, fragment = {"clip": (["--clip-model", tmp_path / "none"], "--clip-model"),
                       "dino": (["--dino-model", "nobody/no-dino"], "--dino-model nobody/no-dino"),
                       "fid": (["--fid-weights", tmp_path / "none.pth"], "--fid-weights"),
                       "lpips": (["--lpips-weights", inputs / "empty"], "--lpips-weights"),
                       "face_models": (["--face-models", tmp_path / "none"], "--face-models"),
                       "device": (["--devices", "cuda:0"], "device 'cuda:0' requested")}[case]
    one_error(invoke("score", run, *extra), fragment)
    assert sorted(p.name for p in run.iterdir()) == []


def test_convert_to_an_unwritable_place_is_one_line(tiny_preset, tmp_path):
    _, adapter = tiny_preset
    (tmp_path / "afile").write_text("x")
    one_error(invoke("convert", adapter, "--out", tmp_path / "afile" / "x.safetensors"), "cannot write the adapter")
