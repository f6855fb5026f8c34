"""Few-step sampling: a speed LoRA (diffusers or kohya format) as its own adapter next to the identity
LoRA, each with its own weight; the LCM / TCD samplers; a tiny VAE decoder. The stand-ins are built
from the tiny preset's configs: a LoRA over the same layer kinds LCM-LoRA covers, and a small
AutoencoderTiny saved with `save_pretrained`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fmu.core.errors import UsageError
from fmu.core.model import lora as L
from fmu.core.model.facemakeup import FaceMakeUp
from fmu.core.model.pipeline import DEFAULT_NEGATIVE, Request, Settings

RANK, ALPHA = 4, 2.0  # alpha != rank: the files' scaling (alpha / rank) must survive both formats
# what LCM-LoRA / TCD-LoRA train: attention, feed-forward, transformer in/out, resnet convs, time embedding
SPEED_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                 "conv1", "conv2", "time_emb_proj"]
SIZE = 64


def _plain_unet(base):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(base, subfolder="unet")


@pytest.fixture(scope="module")
def speed_loras(tmp_path_factory, tiny_preset):
    """The same LoRA weights written twice: diffusers format (save_lora_weights) and kohya format
    (`lora_unet_<module>` keys with lora_down / lora_up / alpha, as sd-scripts names them)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("speed_lora")
    unet = _plain_unet(tiny_preset[0])
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian", target_modules=SPEED_TARGETS))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(unet).items()}
    config = unet.peft_config["default"]
    StableDiffusionPipeline.save_lora_weights(root / "diffusers", unet_lora_layers=state, safe_serialization=True,
                                              unet_lora_adapter_metadata=config.to_dict())
    kohya = {}
    for key, value in state.items():
        module, kind = key.rsplit(".lora_", 1)   # kind: "A.weight" / "B.weight"
        name = "lora_unet_" + module.replace(".", "_")
        kohya[f"{name}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value
        kohya[f"{name}.alpha"] = torch.tensor(ALPHA)
    save_file(kohya, str(root / "kohya.safetensors"))
    return {"diffusers": root / "diffusers", "kohya": root / "kohya.safetensors", "state": state}


def _requests(n=2, condition=True):
    rng = np.random.default_rng(0)
    return [Request(prompt="a portrait photo of a woman", seed=5 + i,
                    id_embedding=rng.normal(size=128).astype(np.float32),
                    face_crop=rng.integers(0, 255, (40, 40, 3), dtype=np.uint8),
                    condition=(rng.random((SIZE, SIZE)) * 255).astype(np.uint8) if condition else None)
            for i in range(n)]


def _loaded(preset, scheduler=None, speed_lora=None, speed_lora_scale=1.0, vae_decoder=None):
    """The tiny model with its features switched on by their calls, in the worker's order."""
    model = FaceMakeUp.from_pretrained(*preset)
    if scheduler is not None:
        model.set_scheduler(scheduler)
    if speed_lora is not None:
        model.load_speed_lora(speed_lora, speed_lora_scale)
    if vae_decoder is not None:
        model.set_vae_decoder(vae_decoder)
    return model


def _with_identity_lora_weights(model):
    """The preset's identity LoRA starts at B = 0 (no effect): give it weight so tests see it."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.unet.named_parameters():
            if "lora_B" in name and f".{L.ID_ADAPTER}." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@pytest.mark.parametrize("fmt", ["diffusers", "kohya"])
def test_both_formats_load_the_files_weights_as_the_speed_adapter(speed_loras, tiny_preset, fmt):
    from peft.utils import get_peft_model_state_dict

    model = _loaded(tiny_preset, speed_lora=speed_loras[fmt], speed_lora_scale=0.7)
    assert L.adapter_names(model.pipe) == [L.ID_ADAPTER, L.SPEED_ADAPTER]
    loaded = get_peft_model_state_dict(model.unet, adapter_name=L.SPEED_ADAPTER)
    assert loaded.keys() == speed_loras["state"].keys() and len(loaded) > 50
    assert all(torch.equal(loaded[k], speed_loras["state"][k]) for k in loaded)
    layer = model.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
    assert layer.active_adapters == [L.ID_ADAPTER, L.SPEED_ADAPTER]   # both on, each with its own weight
    assert layer.scaling[L.SPEED_ADAPTER] == pytest.approx(0.7 * ALPHA / RANK)
    assert layer.scaling[L.ID_ADAPTER] == pytest.approx(1.0)          # the preset's rank 4, alpha 4


def _merged_delta(state: dict, module: str, scale: float) -> torch.Tensor:
    a, b = state[f"{module}.lora_A.weight"], state[f"{module}.lora_B.weight"]
    delta = b.flatten(1) @ a.flatten(1)                 # (out, r) @ (r, in * k * k)
    return scale * (ALPHA / RANK) * delta.reshape(b.shape[0], *a.shape[1:])


def _eps(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents, text = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
    ids, clip = torch.randn(2, 128, generator=g), torch.randn(2, 17, 32, generator=g)
    control = torch.rand(2, 3, SIZE, SIZE, generator=g)
    with torch.no_grad():
        added = model.identity_inputs(ids, clip, 0.7)
        return model.predict_noise(latents, torch.tensor(400), text, added, control, 0.5)


def test_the_speed_lora_acts_as_its_merge_into_the_unet(speed_loras, tiny_preset):
    """With weight s, the model predicts what a plain model predicts with W + s·(alpha/r)·B·A merged
    into every target layer (linear and convolution) of its UNet."""
    scale = 0.6
    model = _loaded(tiny_preset, speed_lora=speed_loras["kohya"], speed_lora_scale=scale)
    merged = FaceMakeUp.from_pretrained(*tiny_preset)
    modules = {k.rsplit(".lora_", 1)[0] for k in speed_loras["state"]}
    with torch.no_grad():
        for module in modules:
            layer = merged.unet.get_submodule(module)
            weight = getattr(layer, "base_layer", layer).weight
            weight += _merged_delta(speed_loras["state"], module, scale)
    before = _eps(FaceMakeUp.from_pretrained(*tiny_preset))
    after, reference = _eps(model), _eps(merged)
    assert (after - before).abs().max() > 1e-2                         # the LoRA acts ...
    torch.testing.assert_close(after, reference, rtol=1e-4, atol=1e-4)  # ... as its merge says


def test_both_loras_are_active_and_each_weight_changes_the_image(speed_loras, tiny_preset):
    """Must-show: LCM, 4 steps, speed LoRA + identity LoRA; changing either weight changes the output."""
    model = _with_identity_lora_weights(_loaded(tiny_preset, "lcm", speed_loras["kohya"]))
    reqs = _requests()
    both = Settings(steps=4, guidance_scale=1.5, width=SIZE, height=SIZE)
    base = model.generate(reqs, both)
    id_half = model.generate(reqs, Settings(**{**both.__dict__, "id_lora_scale": 0.5}))
    model.lora_scales[L.SPEED_ADAPTER] = 0.5
    speed_half = model.generate(reqs, both)
    model.lora_scales[L.SPEED_ADAPTER] = 1.0
    again = model.generate(reqs, both)
    for a, b in ((base, id_half), (base, speed_half), (id_half, speed_half)):
        assert any(not np.array_equal(x, y) for x, y in zip(a, b))
    assert all(np.array_equal(x, y) for x, y in zip(base, again))      # weights restored: same images


def test_identity_off_keeps_the_speed_lora_and_reproduces_diffusers_with_it(speed_loras, tiny_preset):
    """id_scale 0: the identity LoRA is off, the speed LoRA stays at its weight; fmu's loop then equals
    diffusers' StableDiffusionPipeline with the same LoRA (load_lora_weights + set_adapters) and LCM."""
    from diffusers import StableDiffusionPipeline

    from fmu.core.model.load import make_scheduler

    base = tiny_preset[0]
    model = _with_identity_lora_weights(_loaded(
        tiny_preset, "lcm", speed_loras["diffusers"], speed_lora_scale=0.8))
    reqs = _requests(condition=False)
    settings = Settings(steps=4, guidance_scale=1.5, id_scale=0.0, width=SIZE, height=SIZE)
    ours = model.generate(reqs, settings)
    layer = model.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
    assert layer.active_adapters == [L.SPEED_ADAPTER]

    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = make_scheduler("lcm", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(speed_loras["diffusers"], adapter_name="x")
    pipe.set_adapters(["x"], adapter_weights=[0.8])
    ref = pipe([r.prompt for r in reqs], negative_prompt=[DEFAULT_NEGATIVE] * 2, num_inference_steps=4,
               guidance_scale=1.5, height=SIZE, width=SIZE, output_type="np",
               generator=[torch.Generator().manual_seed(r.seed) for r in reqs]).images
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, (np.clip(b, 0, 1) * 255).round().astype(np.uint8))


def test_a_finetune_lora_keeps_its_weight_across_an_identity_off_batch(tiny_preset, tmp_path):
    """The identity channel off for one batch turns its LoRAs off for that batch only: the finetune
    LoRA comes back with its own weight (diffusers' `scale` kwarg would reset it to 1)."""
    model = _with_identity_lora_weights(FaceMakeUp.from_pretrained(*tiny_preset))
    L.add_lora(model.unet, 2, name=L.FINETUNE_ADAPTER)
    with torch.no_grad():
        for name, p in model.unet.named_parameters():
            if "lora_B" in name and f".{L.FINETUNE_ADAPTER}." in name:
                p.normal_(0, 0.3)
    model.save_lora_weights(tmp_path / "ft.safetensors")
    fresh = FaceMakeUp.from_pretrained(*tiny_preset)
    fresh.unet.load_state_dict(model.unet.state_dict(), strict=False)   # the same identity LoRA weights
    fresh.load_lora_weights(tmp_path / "ft.safetensors", scale=0.3)
    reqs, on = _requests(), Settings(steps=2, width=SIZE, height=SIZE)
    first = fresh.generate(reqs, on)
    fresh.generate(reqs, Settings(steps=2, id_scale=0.0, width=SIZE, height=SIZE))
    layer = fresh.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
    assert layer.active_adapters == []                                  # both identity LoRAs were off
    again = fresh.generate(reqs, on)
    assert layer.scaling[L.FINETUNE_ADAPTER] == pytest.approx(0.3 * 2 / 2)  # rank 2, alpha 2, weight 0.3
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_tcd_uses_eta_0_3_by_default_and_reproduces_diffusers(tiny_preset):
    from diffusers import StableDiffusionPipeline

    from fmu.core.model.load import make_scheduler

    base = tiny_preset[0]
    model = _loaded(tiny_preset, "tcd")
    reqs = _requests(n=1, condition=False)
    settings = Settings(steps=4, guidance_scale=1.5, id_scale=0.0, width=SIZE, height=SIZE)
    default = model.generate(reqs, settings)[0]
    explicit = model.generate(reqs, Settings(**{**settings.__dict__, "eta": 0.3}))[0]
    deterministic = model.generate(reqs, Settings(**{**settings.__dict__, "eta": 0.0}))[0]
    assert np.array_equal(default, explicit) and not np.array_equal(default, deterministic)
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = make_scheduler("tcd", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe([reqs[0].prompt], negative_prompt=[DEFAULT_NEGATIVE], num_inference_steps=4, guidance_scale=1.5,
               eta=0.3, height=SIZE, width=SIZE, output_type="np",
               generator=[torch.Generator().manual_seed(reqs[0].seed)]).images[0]
    np.testing.assert_array_equal(default, (np.clip(ref, 0, 1) * 255).round().astype(np.uint8))


def test_at_guidance_1_the_unconditional_branch_and_its_zero_face_are_gone(tiny_preset):
    model = FaceMakeUp.from_pretrained(*tiny_preset)
    seen = []
    predict = model.predict_noise

    def spy(latents, t, text, added, *args, **kwargs):
        seen.append((latents.shape[0], added["image_embeds"][0].abs().sum(dim=(1, 2))))
        return predict(latents, t, text, added, *args, **kwargs)

    model.predict_noise = spy
    reqs = _requests()
    model.generate(reqs, Settings(steps=1, guidance_scale=7.5, width=SIZE, height=SIZE))
    model.generate(reqs, Settings(steps=1, guidance_scale=1.0, width=SIZE, height=SIZE))
    (n_cfg, ids_cfg), (n_plain, ids_plain) = seen
    assert n_cfg == 4 and (ids_cfg[:2] == 0).all() and (ids_cfg[2:] > 0).all()  # zero face: unconditional half
    assert n_plain == 2 and (ids_plain > 0).all()                                # no unconditional branch


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    from diffusers import AutoencoderTiny

    root = tmp_path_factory.mktemp("taesd")
    torch.manual_seed(0)
    for name, channels in (("taesd", 4), ("taesd16", 16)):
        AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                        num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
                        latent_channels=channels).save_pretrained(root / name)
    return root


def test_tiny_vae_decoder_decodes_the_final_latents(tiny_preset, tiny_decoder):
    from diffusers import AutoencoderTiny

    model = _loaded(tiny_preset, vae_decoder=f"tiny:{tiny_decoder / 'taesd'}")
    assert isinstance(model.decoder, AutoencoderTiny)
    seen, decode = [], model.decoder.decode
    model.decoder.decode = lambda latents, *a, **k: seen.append(latents.clone()) or decode(latents, *a, **k)
    images = model.generate(_requests(), Settings(steps=2, width=SIZE, height=SIZE))
    assert len(seen) == 1 and seen[0].shape == (2, 4, 8, 8) and images[0].shape == (SIZE, SIZE, 3)
    with torch.no_grad():  # TAESD takes the scaled latents the UNet makes (its scaling_factor is 1)
        ref = model.pipe.image_processor.postprocess(decode(seen[0]).sample, output_type="np")
    plain = FaceMakeUp.from_pretrained(*tiny_preset).generate(_requests(), Settings(steps=2, width=SIZE, height=SIZE))
    for got, want, full in zip(images, ref, plain):
        np.testing.assert_array_equal(got, (np.clip(want, 0, 1) * 255).round().astype(np.uint8))
        assert not np.array_equal(got, full)   # not the full VAE's image


def test_bad_few_step_inputs_are_usage_errors(tiny_preset, tiny_decoder, tmp_path):
    model = FaceMakeUp.from_pretrained(*tiny_preset)
    with pytest.raises(UsageError, match="use tiny:<folder or hub id>"):
        model.set_vae_decoder(str(tiny_decoder / "taesd"))
    with pytest.raises(UsageError, match="16-channel latents"):
        model.set_vae_decoder(f"tiny:{tiny_decoder / 'taesd16'}")
    with pytest.raises(UsageError, match="cannot load tiny VAE decoder"):
        model.set_vae_decoder(f"tiny:{tmp_path / 'none'}")
    assert model.decoder is None                  # a refused decoder leaves the VAE decoding
    with pytest.raises(UsageError, match="no such file"):
        model.load_speed_lora(str(tmp_path / "missing.safetensors"))
    from safetensors.torch import save_file

    save_file({"lora_unet_nothing_here.lora_down.weight": torch.zeros(2, 8),
               "lora_unet_nothing_here.lora_up.weight": torch.zeros(8, 2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(UsageError, match="speed LoRA"):
        model.load_speed_lora(str(tmp_path / "foreign.safetensors"))


def test_generate_lcm_with_a_speed_lora_in_4_steps(speed_loras, tiny_preset, tmp_path):
    """Must-show: `fmu generate --scheduler lcm --speed-lora <tiny LoRA> --steps 4` on the demo manifest."""
    import polars as pl

    from fmu.app import app
    from fmu.manifests.demo import write_demo_inputs

    manifest = write_demo_inputs(tmp_path / "inputs")
    out = tmp_path / "lcm"
    result = CliRunner().invoke(app, ["generate", str(manifest), "--out", str(out), "--scheduler", "lcm",
                                      "--speed-lora", str(speed_loras["kohya"]), "--speed-lora-scale", "0.9",
                                      "--steps", "4", "--guidance-scale", "1.5", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    results = pl.read_parquet(out / "results.parquet")
    assert results.height == 4 and results["status"].to_list() == ["ok"] * 4 and set(results["steps"]) == {4}
    config = json.loads((out / "run.json").read_text())["config"]
    assert (config["scheduler"], config["speed_lora"], config["speed_lora_scale"]) == \
        ("lcm", str(speed_loras["kohya"]), 0.9)
    bad = CliRunner().invoke(app, ["generate", str(manifest), "--out", str(tmp_path / "x"), "--eta", "2"])
    assert bad.exit_code == 2 and "--eta 2.0: must be within [0, 1]" in bad.output


def test_generate_switches_the_features_on_by_their_calls(speed_loras, tiny_preset, tmp_path):
    """diffusers' pattern: from_pretrained loads, the features are calls. The worker's model for
    --scheduler lcm --speed-lora --vae-tiling is the one those calls make on a plain model."""
    from fmu.core.runner.config import GenerateConfig
    from fmu.core.runner.worker import load_model

    with pytest.raises(TypeError, match="speed_lora"):  # no feature keywords left on the loader
        FaceMakeUp.from_pretrained(*tiny_preset, speed_lora=speed_loras["kohya"])
    cfg = GenerateConfig.from_options(manifest=tmp_path / "m.csv", out=tmp_path / "out", scheduler="lcm",
                                      speed_lora=speed_loras["kohya"], speed_lora_scale=0.7, vae_tiling=True)
    worker = load_model(cfg.load, "cpu", *tiny_preset)
    calls = FaceMakeUp.from_pretrained(*tiny_preset)
    calls.set_scheduler("lcm")
    calls.load_speed_lora(speed_loras["kohya"], 0.7)
    calls.enable_vae_tiling()
    assert type(calls.pipe.scheduler).__name__ == type(worker.pipe.scheduler).__name__ == "LCMScheduler"
    assert calls.pipe.vae.use_tiling and worker.pipe.vae.use_tiling and not worker.pipe.vae.use_slicing
    assert calls.lora_scales == worker.lora_scales == {L.SPEED_ADAPTER: 0.7}
    reqs, settings = _requests(), Settings(steps=4, guidance_scale=1.5, width=SIZE, height=SIZE)
    made = calls.generate(reqs, settings)
    assert all(np.array_equal(a, b) for a, b in zip(made, worker.generate(reqs, settings), strict=True))
    plain = _loaded(tiny_preset, "lcm").generate(reqs, settings)
    assert any(not np.array_equal(a, b) for a, b in zip(made, plain))  # the LoRA the calls loaded acts
    with pytest.raises(UsageError, match="offload"):  # the CPU has nothing to offload to
        calls.enable_model_cpu_offload()
    with pytest.raises(UsageError, match="not cpu"):
        calls.enable_model_cpu_offload("cpu")
