"""Base models in every common form: diffusers folder, single-file SD1.5 (.safetensors / .ckpt),
a separate VAE, the scheduler choice. The single-file checkpoints are exports of the tiny preset
to the original LDM layout (the inverse of diffusers' single-file conversion), written here."""

import numpy as np
import pytest
import torch

from fmu.core.errors import UsageError
from fmu.core.model.facemakeup import FaceMakeUp
from fmu.core.model.load import load_base, make_scheduler, resolve_dtype
from fmu.core.model.pipeline import DEFAULT_NEGATIVE, Request, Settings

CPU = torch.device("cpu")

def _unet_map(cfg):
    """diffusers UNet key prefix -> LDM prefix, for the given config (any depth)."""
    L = cfg["layers_per_block"]
    n = len(cfg["block_out_channels"])
    m = {}
    for i in range(n):
        for j in range(L):
            m[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{i * (L + 1) + j + 1}.0."
            m[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{i * (L + 1) + j + 1}.1."
        m[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * (L + 1)}.0.op."
        for j in range(L + 1):
            m[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{i * (L + 1) + j}.0."
            m[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{i * (L + 1) + j}.1."
    m["mid_block.resnets.0."] = "middle_block.0."
    m["mid_block.attentions.0."] = "middle_block.1."
    m["mid_block.resnets.1."] = "middle_block.2."
    return m

RES = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
       ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]

def unet_to_ldm(sd, cfg):
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
    fixed = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    pm = _unet_map(cfg)
    out = {}
    for k, v in sd.items():
        if k in fixed:
            out[fixed[k]] = v
            continue
        new = None
        if k.startswith("up_blocks.") and ".upsamplers.0.conv." in k:
            i = int(k.split(".")[1])
            L = cfg["layers_per_block"]
            has_attn = "CrossAttn" in cfg["up_block_types"][i]
            new = f"output_blocks.{i * (L + 1) + L}.{2 if has_attn else 1}.conv." + k.split(".conv.")[1]
        else:
            for d, ldm in pm.items():
                if k.startswith(d):
                    rest = k[len(d):]
                    if ".resnets." in d:
                        for a, b in RES:
                            if rest.startswith(a + "."):
                                rest = b + rest[len(a):]
                                break
                    new = ldm + rest
                    break
        assert new is not None, k
        out[new] = v
    return {"model.diffusion_model." + k: v for k, v in out.items()}

VAE_RES = [("conv_shortcut", "nin_shortcut")]

def vae_to_ldm(sd, cfg):
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
    fixed = DIFFUSERS_TO_LDM_MAPPING["vae"]
    n = len(cfg["block_out_channels"])
    out = {}
    for k, v in sd.items():
        if k in fixed:
            out[fixed[k]] = v
            continue
        p = k.split(".")
        if p[1] == "down_blocks":
            if p[3] == "resnets":
                new = f"encoder.down.{p[2]}.block.{p[4]}." + ".".join(p[5:])
            else:
                new = f"encoder.down.{p[2]}.downsample.conv." + ".".join(p[6:])
        elif p[1] == "up_blocks":
            i = n - 1 - int(p[2])
            if p[3] == "resnets":
                new = f"decoder.up.{i}.block.{p[4]}." + ".".join(p[5:])
            else:
                new = f"decoder.up.{i}.upsample.conv." + ".".join(p[6:])
        elif p[1] == "mid_block":
            if p[2] == "resnets":
                new = f"{p[0]}.mid.block_{int(p[3]) + 1}." + ".".join(p[4:])
            else:
                rest = ".".join(p[4:])
                for a, b in [("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"),
                             ("group_norm", "norm")]:
                    if rest.startswith(a + "."):
                        rest = b + rest[len(a):]
                        break
                new = f"{p[0]}.mid.attn_1.{rest}"
                if v.ndim == 2:
                    v = v[:, :, None, None]
        else:
            raise AssertionError(k)
        new = new.replace("conv_shortcut", "nin_shortcut")
        out[new] = v
    return {"first_stage_model." + k: v for k, v in out.items()}

def pipe_to_ldm(pipe):
    sd = {}
    sd.update(unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    sd.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    sd.update({"cond_stage_model.transformer." + ("" if k.startswith("text_model.") else "text_model.") + k: v
               for k, v in pipe.text_encoder.state_dict().items()})
    return {k: v.contiguous() for k, v in sd.items()}


@pytest.fixture(scope="module")
def single_files(tiny_preset, tmp_path_factory):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    base, _ = tiny_preset
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    sd = pipe_to_ldm(pipe)
    root = tmp_path_factory.mktemp("single")
    save_file(sd, root / "tiny.safetensors")
    torch.save({"state_dict": sd}, root / "tiny.ckpt")
    return pipe, root


@pytest.mark.parametrize("name", ["tiny.safetensors", "tiny.ckpt"])
def test_single_file_base_loads_the_same_weights(single_files, tiny_preset, name):
    ref, root = single_files
    base, _ = tiny_preset
    pipe = load_base(root / name, CPU, torch.float32, base_config=base)
    for part in ("unet", "vae", "text_encoder", "image_encoder"):
        a, b = getattr(ref, part).state_dict(), getattr(pipe, part).state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k].reshape(a[k].shape)), (part, k)
    assert pipe.vae.config.scaling_factor == ref.vae.config.scaling_factor


def test_single_file_model_generates_like_the_folder(single_files, tiny_preset):
    _, root = single_files
    base, adapter = tiny_preset
    rng = np.random.default_rng(0)
    req = [Request(prompt="a portrait", id_embedding=rng.normal(size=128).astype(np.float32),
                   face_crop=rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), seed=3)]
    settings = Settings(steps=2, width=64, height=64)
    a = FaceMakeUp.from_pretrained(base, adapter).generate(req, settings)[0]
    b = FaceMakeUp.from_pretrained(root / "tiny.safetensors", adapter, base_config=base).generate(req, settings)[0]
    np.testing.assert_array_equal(a, b)


def test_single_file_without_config_offline_says_what_to_pass(single_files):
    _, root = single_files
    with pytest.raises(UsageError, match="--base-config"):
        load_base(root / "tiny.safetensors", CPU, torch.float32)


@pytest.mark.parametrize("name,cls", [("euler", "EulerDiscreteScheduler"), ("dpm++", "DPMSolverMultistepScheduler")])
def test_scheduler_choice_reproduces_the_diffusers_pipeline(tiny_preset, name, cls):
    """id_scale 0: fmu's loop with the chosen scheduler == StableDiffusionPipeline with it."""
    from diffusers import StableDiffusionPipeline

    base, adapter = tiny_preset
    model = FaceMakeUp.from_pretrained(base, adapter)
    model.set_scheduler(name)
    assert type(model.pipe.scheduler).__name__ == cls
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    req = Request(prompt="a photo", id_embedding=rng.normal(size=128).astype(np.float32),
                  face_crop=rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), seed=4)
    ours = model.generate([req], Settings(steps=3, id_scale=0.0, width=64, height=64))[0]
    ref = pipe([req.prompt], negative_prompt=[DEFAULT_NEGATIVE], num_inference_steps=3, guidance_scale=7.5,
               height=64, width=64, output_type="np", generator=[torch.Generator().manual_seed(4)]).images[0]
    np.testing.assert_array_equal(ours, (np.clip(ref, 0, 1) * 255).round().astype(np.uint8))


def test_vae_override_replaces_the_vae(tiny_preset, tmp_path):
    from diffusers import AutoencoderKL

    base, adapter = tiny_preset
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    with torch.no_grad():
        vae.decoder.conv_out.bias.add_(0.5)
    vae.save_pretrained(tmp_path / "vae")
    model = FaceMakeUp.from_pretrained(base, adapter, vae=tmp_path / "vae")
    assert not (model.pipe.vae.use_slicing or model.pipe.vae.use_tiling)
    model.enable_vae_slicing()
    model.enable_vae_tiling()
    assert torch.equal(model.pipe.vae.decoder.conv_out.bias, vae.decoder.conv_out.bias)
    assert model.pipe.vae.use_slicing and model.pipe.vae.use_tiling
    with pytest.raises(UsageError, match="cannot load VAE"):
        load_base(base, CPU, torch.float32, vae=tmp_path / "missing")


def test_precision_and_device_rules():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda:0") == torch.float16
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16   # reduced precision runs on the CPU too
    with pytest.raises(UsageError, match="precision bf16 on cuda"):  # probed there: this torch has no CUDA
        resolve_dtype("bf16", "cuda")
    with pytest.raises(UsageError, match="unknown scheduler"):
        make_scheduler("plms", {})


def test_offload_is_refused_on_cpu(tiny_preset):
    base, adapter = tiny_preset
    with pytest.raises(UsageError, match="needs a cuda, xpu or mps device, not cpu"):
        FaceMakeUp.from_pretrained(base, adapter).enable_model_cpu_offload()


def test_a_base_model_path_that_does_not_exist_is_named_as_such(tmp_path):
    from fmu.core.model.load import load_base

    for spelled in (str(tmp_path / "nowhere"), "./no/such/model"):
        with pytest.raises(UsageError, match="no such file or folder"):
            load_base(spelled, "cpu", torch.float32)
