"""Build a FaceMakeUp model from a base SD1.5 model and an adapter checkpoint.

Base models: a diffusers folder, a hub id (the local Hugging Face cache only unless
`offline=False`), or a single-file SD1.5 checkpoint (`.safetensors` / `.ckpt`, original LDM
layout) read by diffusers' `from_single_file` with its component configs taken from
`base_config` (a diffusers folder such as the tiny preset's base or any SD1.5 folder, or a hub
id in the cache). Optional: a separate VAE (`vae=`, e.g. stabilityai/sd-vae-ft-mse, the
authors' choice), the scheduler, VAE slicing/tiling, `torch.compile`, model CPU offload.
Adapters: anything `convert.load_adapter_any` reads (fmu, authors' `model.bin`, h94 files).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UsageError, first_line
from . import adapter as A
from .pipeline import FaceMakeUp
from .settings import SCHEDULERS
from .weights_io import PICKLE_SUFFIXES, read_state

SINGLE_FILE_SUFFIXES = (".safetensors",) + PICKLE_SUFFIXES
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(precision: str, device: str) -> torch.dtype:
    """"auto": fp16 on CUDA, fp32 on CPU. Half precision is refused on CPU (slow, and several
    CPU kernels lack fp16)."""
    if precision == "auto":
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose auto, {', '.join(PRECISIONS)}")
    if precision != "fp32" and not str(device).startswith("cuda"):
        raise UsageError(f"precision {precision} needs a CUDA device; on {device} use fp32")
    return PRECISIONS[precision]


def make_scheduler(name: str, config):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    classes = {"ddim": DDIMScheduler, "dpm++": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler}
    if name not in classes:
        raise UsageError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    if name == "dpm++":  # DPM++ 2M, the usual "DPM++" of SD front-ends
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    return classes[name].from_config(config)


def is_single_file(base: str | Path) -> bool:
    path = Path(str(base))
    return path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES




def _from_single_file(base: Path, dtype, offline: bool, base_config):
    import pickle

    from diffusers import StableDiffusionPipeline

    if base.suffix in PICKLE_SUFFIXES:
        read_state(base)  # weights_only=True first: a code-carrying pickle is refused here, unexecuted
    kwargs = {"config": str(base_config)} if base_config is not None else {}
    try:
        return StableDiffusionPipeline.from_single_file(
            str(base), safety_checker=None, requires_safety_checker=False, image_encoder=None,
            torch_dtype=dtype, local_files_only=offline, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as exc:
        hint = ("" if base_config is not None else
                "; offline, a single file needs its component configs: pass --base-config with an SD1.5 "
                "diffusers folder (or a hub id in the local cache)")
        raise UsageError(f"cannot load single-file base model {base}: {first_line(exc, None)}{hint}") from None
    except Exception as exc:  # diffusers' SingleFileComponentError and friends
        raise UsageError(f"cannot load single-file base model {base} (with config {base_config}): "
                         f"{first_line(exc, None)}") from None


def load_base(base: str | Path, device: torch.device, dtype: torch.dtype, offline: bool = True,
              image_encoder: str | Path | None = None, *, vae: str | Path | None = None,
              scheduler: str = "ddim", base_config: str | Path | None = None,
              vae_slicing: bool = False, vae_tiling: bool = False, move: bool = True):
    """A StableDiffusionPipeline (components only) with a CLIP image encoder attached."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    if scheduler not in SCHEDULERS:
        raise UsageError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    text = str(base)
    if text.startswith(("/", "./", "../", "~")) and not Path(text).expanduser().exists():
        # spelled as a path, not a hub id: say so instead of the hub's repo-id complaint
        raise UsageError(f"base model {text}: no such file or folder")
    single = is_single_file(base)
    if single:
        pipe = _from_single_file(Path(str(base)), dtype, offline, base_config)
    else:
        try:
            pipe = StableDiffusionPipeline.from_pretrained(
                str(base), safety_checker=None, requires_safety_checker=False, dtype=dtype,
                local_files_only=offline)
        except (OSError, ValueError, EnvironmentError) as exc:
            raise UsageError(f"cannot load base model {base!s}: {first_line(exc, None)}") from None
    pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    if vae is not None:
        try:
            pipe.vae = AutoencoderKL.from_pretrained(str(vae), torch_dtype=dtype, local_files_only=offline)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load VAE {vae!s} (a diffusers AutoencoderKL folder or hub id): "
                             f"{first_line(exc, None)}") from None
    if image_encoder is not None or getattr(pipe, "image_encoder", None) is None:
        source = image_encoder or (base_config if single else base)
        try:
            if source is None:
                raise OSError("a single-file checkpoint holds no image encoder")
            kwargs = {"subfolder": "image_encoder"} if image_encoder is None else {}
            pipe.image_encoder = CLIPVisionModelWithProjection.from_pretrained(
                str(source), dtype=dtype, local_files_only=offline, **kwargs)
        except (OSError, ValueError) as exc:
            raise UsageError(f"no CLIP image encoder at {source!s} (give --image-encoder): "
                             f"{first_line(exc, None)}") from None
    if pipe.feature_extractor is None:
        pipe.feature_extractor = CLIPImageProcessor(size=224, crop_size=224)
    if vae_slicing:
        pipe.vae.enable_slicing()
    if vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if move else pipe


def load_model(base: str | Path, adapter_path: Path | None, device: str = "cpu",
               dtype: torch.dtype = torch.float32, offline: bool = True, shading: bool = True,
               image_encoder: str | Path | None = None, *, lora: str | Path | None = None,
               vae: str | Path | None = None, scheduler: str = "ddim",
               base_config: str | Path | None = None, vae_slicing: bool = False,
               vae_tiling: bool = False, compile: bool = False, offload: bool = False) -> FaceMakeUp:
    """The model for `fmu generate`. `adapter_path`: any adapter `load_adapter_any` reads;
    `lora`: a separate LoRA file for IP-Adapter checkpoints (h94's *_lora.safetensors).

    `offload`: diffusers' model CPU offload (accelerate hooks move each model to the GPU when it
    runs); the ShadingNet gets its own hook and stays on the GPU once used. CUDA only.
    `compile`: `torch.compile` of the UNet and ShadingNet in place (`Module.compile`)."""
    from diffusers import ControlNetModel

    from .convert import load_adapter_any

    dev = torch.device(device)
    if offload and dev.type != "cuda":
        raise UsageError(f"--offload moves models between CPU and GPU; it needs a CUDA device, not {device}")
    if adapter_path is None:
        raise UsageError("an adapter checkpoint is required (--adapter)")
    pipe = load_base(base, dev, dtype, offline, image_encoder, vae=vae, scheduler=scheduler,
                     base_config=base_config, vae_slicing=vae_slicing, vae_tiling=vae_tiling,
                     move=not offload)
    unet = pipe.unet
    try:
        tensors, meta = load_adapter_any(Path(adapter_path), dict(unet.config), lora)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load adapter {adapter_path}: {exc}") from None
    cfg = A.AdapterConfig.from_dict(json.loads(meta["config"]))
    shading_net = None
    if shading and "shading_config" in meta:
        # built from the plain UNet, before the identity channel changes its config
        shading_net = ControlNetModel.from_config(json.loads(meta["shading_config"]))
        shading_net.load_state_dict(A.split(tensors, "shading"), strict=True)
        shading_net.to(dtype=dtype).eval()
    A.install_identity_channel(unet, cfg)
    try:
        A.image_projection(unet).load_state_dict(A.split(tensors, "image_proj"), strict=True)
        A.load_ip_attention_state(unet, A.split(tensors, "ip_attn"))
    except RuntimeError as exc:
        raise UsageError(f"adapter {adapter_path} does not fit base model {base}: {first_line(exc, None)}") from None
    lora_sd = A.split(tensors, "lora")
    if lora_sd:
        A.add_lora(unet, cfg.lora_rank)
        A.load_lora_state(unet, lora_sd)
    unet.to(dtype=dtype).eval()
    if offload:
        from accelerate import cpu_offload_with_hook

        pipe.enable_model_cpu_offload(device=dev)
        if shading_net is not None:
            cpu_offload_with_hook(shading_net, dev)
    else:
        unet.to(dev)
        if shading_net is not None:
            shading_net.to(dev)
    if compile:
        unet.compile()
        if shading_net is not None:
            shading_net.compile()
    return FaceMakeUp(pipe=pipe, cfg=cfg, shading_net=shading_net, device=dev, dtype=dtype)


def new_shading_net(unet):
    """ShadingNet = a ControlNet copied from the UNet; its cross-attention will see ID tokens."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_channels=3)
