"""Build a FaceMakeUp model from a base SD1.5 model and an fmu adapter checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UsageError
from . import adapter as A
from .pipeline import FaceMakeUp


def load_base(base: str | Path, device: torch.device, dtype: torch.dtype, offline: bool = True,
              image_encoder: str | Path | None = None):
    """A diffusers folder or hub id (hub: local cache only unless `offline=False`)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(base), safety_checker=None, requires_safety_checker=False, dtype=dtype,
            local_files_only=offline)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise UsageError(f"cannot load base model {base!s}: {str(exc).splitlines()[0]}") from None
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    if image_encoder is not None or pipe.image_encoder is None:
        source = image_encoder or base
        try:
            kwargs = {"subfolder": "image_encoder"} if image_encoder is None else {}
            pipe.image_encoder = CLIPVisionModelWithProjection.from_pretrained(
                str(source), dtype=dtype, local_files_only=offline, **kwargs)
        except (OSError, ValueError) as exc:
            raise UsageError(f"no CLIP image encoder at {source!s} (give --image-encoder): "
                             f"{str(exc).splitlines()[0]}") from None
    if pipe.feature_extractor is None:
        pipe.feature_extractor = CLIPImageProcessor(size=224, crop_size=224)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_model(base: str | Path, adapter_path: Path | None, device: str = "cpu",
               dtype: torch.dtype = torch.float32, offline: bool = True, shading: bool = True,
               image_encoder: str | Path | None = None) -> FaceMakeUp:
    from diffusers import ControlNetModel

    dev = torch.device(device)
    pipe = load_base(base, dev, dtype, offline, image_encoder)
    if adapter_path is None:
        raise UsageError("an adapter checkpoint is required (--adapter)")
    try:
        tensors, meta = A.read_adapter(Path(adapter_path))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load adapter {adapter_path}: {exc}") from None
    cfg = A.AdapterConfig.from_dict(json.loads(meta["config"]))
    shading_net = None
    if shading and "shading_config" in meta:
        # built from the plain UNet, before the identity channel changes its config
        shading_net = ControlNetModel.from_config(json.loads(meta["shading_config"]))
        shading_net.load_state_dict(A.split(tensors, "shading"), strict=True)
        shading_net.to(dev, dtype).eval()
    unet = pipe.unet
    A.install_identity_channel(unet, cfg)
    A.image_projection(unet).load_state_dict(A.split(tensors, "image_proj"), strict=True)
    A.load_ip_attention_state(unet, A.split(tensors, "ip_attn"))
    lora = A.split(tensors, "lora")
    if lora:
        A.add_lora(unet, cfg.lora_rank)
        A.load_lora_state(unet, lora)
    unet.to(dev, dtype).eval()
    return FaceMakeUp(pipe=pipe, cfg=cfg, shading_net=shading_net, device=dev, dtype=dtype)


def new_shading_net(unet):
    """ShadingNet = a ControlNet copied from the UNet; its cross-attention will see ID tokens."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_channels=3)
