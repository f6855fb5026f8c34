"""Load the base SD1.5 model (components only) that `FaceMakeUp.from_pretrained` puts an adapter on.

Base models: a diffusers folder, a hub id (the local Hugging Face cache only unless
`offline=False`), or a single-file SD1.5 checkpoint (`.safetensors` / `.ckpt`, original LDM
layout) read by diffusers' `from_single_file` with its component configs taken from
`base_config` (a diffusers folder such as the tiny preset's base or any SD1.5 folder, or a hub
id in the cache). Optional: a separate VAE (`vae=`, e.g. stabilityai/sd-vae-ft-mse, the
authors' choice), the scheduler (DDIM unless named; `FaceMakeUp.set_scheduler` changes it later),
the CLIP image encoder. VAE slicing / tiling and the rest are the model's feature calls (facemakeup.py).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F

from ..devices import device_type
from ..errors import UsageError, first_line
from .settings import SCHEDULERS
from .weights_io import PICKLE_SUFFIXES, is_single_file, read_state

# what a folder of unreadable weights raises through from_pretrained: a pickle that torch's
# weights_only loader refuses (code inside) is an UnpicklingError, not an OSError
LOAD_ERRORS = (OSError, ValueError, pickle.UnpicklingError)


def _why(exc: Exception) -> str:
    if isinstance(exc, pickle.UnpicklingError):  # torch's text suggests weights_only=False: not that
        return "a pickle weights file holding more than tensors (code?) was refused unexecuted; use safetensors"
    return first_line(exc, None)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(precision: str, device: str) -> torch.dtype:
    """The weight dtype of a precision name on `device`. "auto": fp16 on an accelerator (cuda, xpu,
    mps), fp32 on the CPU. fp16 and bf16 are accepted on every device whose torch kernels run the
    model's operations in that dtype (`reduced_precision_problem` tries them there); otherwise a
    UsageError names the operation that is missing."""
    if precision == "auto":
        return torch.float32 if device_type(device) == "cpu" else torch.float16
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose auto, {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    problem = reduced_precision_problem(dtype, device)
    if problem:
        raise UsageError(f"precision {precision} on {device}: {problem}; use fp32 there")
    return dtype


def reduced_precision_problem(dtype: torch.dtype, device: str) -> str | None:
    """None when torch runs the operations SD1.5, ControlNet and CLIP are made of (conv, group and
    layer norm, attention, SiLU/GELU, nearest upsampling, softmax) in `dtype` on `device`; else what
    failed. Older CPU builds lacked several fp16 kernels; a small probe asks this build itself."""
    if dtype == torch.float32:
        return None
    try:
        # fixed values, not randn: the probe leaves torch's global random state alone
        x = torch.linspace(-1, 1, 512, device=device).reshape(1, 8, 8, 8).to(dtype)
        x = F.conv2d(x, torch.linspace(-0.1, 0.1, 576, device=device).reshape(8, 8, 3, 3).to(dtype), padding=1)
        x = F.interpolate(F.silu(F.group_norm(x, 4)), scale_factor=2.0, mode="nearest")
        q = x.flatten(2).transpose(1, 2).reshape(1, 2, -1, 4)
        a = F.gelu(F.layer_norm(F.scaled_dot_product_attention(q, q, q), (4,)))
        torch.softmax(a, -1).sum().item()
    except Exception as exc:  # noqa: BLE001  a missing kernel or a device torch lacks: both answer it
        return f"torch cannot run the model's operations in {str(dtype).removeprefix('torch.')} here " \
               f"({first_line(exc, 160)})"
    return None


def make_scheduler(name: str, config):
    """A diffusers scheduler by fmu's name for it, on the base model's noise schedule. lcm / tcd are
    the samplers of few-step LoRAs (LCM-LoRA, TCD-LoRA, Hyper-SD); ddim-trailing spreads DDIM's
    steps over the whole schedule ("trailing" timesteps), as Hyper-SD's N-step LoRAs want."""
    # deferred: heavy (diffusers); parts, doctor and preflight import this module for is_single_file
    # and resolve_dtype, which need torch only
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        LCMScheduler,
        TCDScheduler,
    )

    if name not in SCHEDULERS:
        raise UsageError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    if name == "dpm++":  # DPM++ 2M, the usual "DPM++" of SD front-ends
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    if name == "ddim-trailing":
        return DDIMScheduler.from_config(config, timestep_spacing="trailing")
    classes = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "lcm": LCMScheduler, "tcd": TCDScheduler}
    return classes[name].from_config(config)



def _from_single_file(base: Path, dtype, offline: bool, base_config):
    from diffusers import StableDiffusionPipeline  # deferred: heavy (diffusers), as in make_scheduler

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
    except Exception as exc:  # noqa: BLE001  diffusers' SingleFileComponentError and friends
        raise UsageError(f"cannot load single-file base model {base} (with config {base_config}): "
                         f"{first_line(exc, None)}") from None


def load_base(base: str | Path, device: torch.device, dtype: torch.dtype, offline: bool = True,
              image_encoder: str | Path | None = None, *, vae: str | Path | None = None,
              scheduler: str = "ddim", base_config: str | Path | None = None,
              vae_dtype: torch.dtype | None = None):
    """A StableDiffusionPipeline (components only) with a CLIP image encoder attached; every
    component in `dtype` except the VAE when `vae_dtype` says otherwise (fp32 for a VAE that
    overflows in fp16)."""
    # deferred: heavy (diffusers, transformers), as in make_scheduler
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
        except LOAD_ERRORS as exc:
            raise UsageError(f"cannot load base model {base!s}: {_why(exc)}") from None
    pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    if vae is not None:
        try:
            pipe.vae = AutoencoderKL.from_pretrained(str(vae), torch_dtype=dtype, local_files_only=offline)
        except LOAD_ERRORS as exc:
            raise UsageError(f"cannot load VAE {vae!s} (a diffusers AutoencoderKL folder or hub id): "
                             f"{_why(exc)}") from None
    if image_encoder is not None or getattr(pipe, "image_encoder", None) is None:
        source = image_encoder or (base_config if single else base)
        try:
            if source is None:
                raise OSError("a single-file checkpoint holds no image encoder")
            kwargs = {"subfolder": "image_encoder"} if image_encoder is None else {}
            pipe.image_encoder = CLIPVisionModelWithProjection.from_pretrained(
                str(source), dtype=dtype, local_files_only=offline, **kwargs)
        except LOAD_ERRORS as exc:
            raise UsageError(f"no CLIP image encoder at {source!s} (give --image-encoder): "
                             f"{_why(exc)}") from None
    if vae_dtype is not None and vae_dtype != dtype:
        pipe.vae.to(dtype=vae_dtype)
    if pipe.feature_extractor is None:
        pipe.feature_extractor = CLIPImageProcessor(size=224, crop_size=224)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
