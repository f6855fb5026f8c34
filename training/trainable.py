"""What `fmu train` and `fmu finetune` train, and the file those weights go to.

- mode `full` (`fmu train`): the adapter — projection, IP attention (to_k_ip / to_v_ip), identity
  LoRA, ShadingNet — written as an fmu adapter (`adapter.safetensors`, `fmu generate --adapter`).
- mode `lora` (`fmu finetune`): a NEW LoRA (`fmu_ft`) on top of a frozen adapter, written as a
  LoRA file (`lora.safetensors`, `fmu generate --lora`).

The model is built by `FaceMakeUp` (core/model): from an adapter checkpoint, or fresh on a base.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fmu.core.errors import UsageError
from fmu.core.model import lora as L
from fmu.core.model.facemakeup import FaceMakeUp
from fmu.core.model.spec import resolve_model

from .config import TrainConfig


def build_model(cfg: TrainConfig, device: torch.device, weight_dtype: torch.dtype) -> FaceMakeUp:
    """FaceMakeUp to train: from an adapter checkpoint (the preset's by default) or fresh."""
    spec = resolve_model(cfg.preset, cfg.base_model, cfg.init_adapter, adapter_flag=None)
    base, init = spec.base, spec.adapter
    if init is not None:
        model = FaceMakeUp.from_pretrained(base, init, device=str(device), image_encoder=cfg.image_encoder,
                                           fresh_shading=True)
    else:
        model = FaceMakeUp.from_base(base, device=device, image_encoder=cfg.image_encoder,
                                     id_embed_dim=cfg.id_embed_dim, lora_rank=cfg.lora_rank)
    if cfg.face_crop and cfg.face_crop != model.cfg.face_crop:
        if cfg.mode == "lora":  # generation takes the style from the adapter the LoRA rides on
            raise UsageError(f"face_crop {cfg.face_crop!r}: the adapter was trained with "
                             f"{model.cfg.face_crop!r} crops, and a LoRA on top of it must use the same")
        model.cfg.face_crop = cfg.face_crop
    # frozen parts may run in bf16 (mixed precision); trainable ones stay fp32 for the optimizer
    for frozen in (model.pipe.vae, model.pipe.text_encoder, model.pipe.image_encoder):
        frozen.requires_grad_(False).to(device, weight_dtype)
    model.unet.train()
    model.shading_net.train()
    if cfg.mode == "lora":
        L.add_lora(model.unet, cfg.lora_rank, name=L.FINETUNE_ADAPTER)
    return model


def select_trainable(model: FaceMakeUp, mode: str) -> list[torch.nn.Parameter]:
    """full: projection, IP attention (to_k_ip/to_v_ip), LoRA, ShadingNet. lora: the new LoRA only.
    (peft's add_adapter leaves only LoRA trainable, so the rest is switched on by hand.)"""
    unet, shading = model.unet, model.shading_net
    unet.requires_grad_(False)
    shading.requires_grad_(False)
    if mode == "full":
        unet.encoder_hid_proj.requires_grad_(True)
        for proc in unet.attn_processors.values():
            if hasattr(proc, "to_k_ip"):
                proc.to_k_ip.requires_grad_(True)
                proc.to_v_ip.requires_grad_(True)
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)
        shading.requires_grad_(True)
    else:
        for name, p in unet.named_parameters():
            if "lora_" in name and f".{L.FINETUNE_ADAPTER}." in name:
                p.requires_grad_(True)
    params = [p for p in list(unet.parameters()) + list(shading.parameters()) if p.requires_grad]
    if not params:
        raise RuntimeError(f"nothing to train in mode {mode!r}")
    return params


def weights_name(mode: str) -> str:
    return "adapter.safetensors" if mode == "full" else "lora.safetensors"


def save_trained_weights(model: FaceMakeUp, mode: str, path: Path, meta: dict) -> None:
    """full: an fmu adapter (loads in `fmu generate --adapter`); lora: a LoRA file (`--lora`)."""
    if mode == "full":
        model.save_pretrained(path, extra_meta=meta)
    else:
        model.save_lora_weights(path, extra_meta=meta)


def load_trained_weights(model: FaceMakeUp, mode: str, path: Path) -> None:
    """What `save_trained_weights` wrote, back into the same model in place (resume)."""
    if mode == "full":
        model.load_adapter_weights(path)
    else:
        L.load_lora_state(model.unet, L.read_lora_file(path)[0], L.FINETUNE_ADAPTER)
