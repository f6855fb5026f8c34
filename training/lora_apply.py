"""LoRA files from `fmu finetune`: save one peft adapter of the UNet, apply it to a FaceMakeUp.

A finetune LoRA is a NEW peft adapter (`fmu_ft`) on top of the adapter checkpoint's own
identity LoRA (`fmu_id`), which stays as it was: the file holds only the new adapter's
weights (peft layout, safetensors) with its rank, alpha and target pattern in the metadata.
Applying it adds the same adapter and activates both, the new one with weight `scale`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

FORMAT = "fmu-lora/1"
ADAPTER_NAME = "fmu_ft"
BASE_ADAPTER = "fmu_id"


def add_finetune_lora(unet, rank: int, alpha: float | None = None, name: str = ADAPTER_NAME,
                      weight: float = 1.0) -> None:
    """Add a new LoRA next to the existing ones and make all of them active."""
    from peft import LoraConfig

    from core.model.adapter import LORA_TARGETS

    import warnings

    existing = list(getattr(unet, "peft_config", {}) or {})
    with warnings.catch_warnings():  # several adapters on one model is the point here
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                                    target_modules=LORA_TARGETS), adapter_name=name)
    unet.set_adapters(existing + [name], weights=[1.0] * len(existing) + [weight])


def save_lora(path: Path, unet, name: str = ADAPTER_NAME, extra_meta: dict | None = None) -> None:
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save

    from core.images import atomic_write_bytes

    config = unet.peft_config[name]
    tensors = {k: v.detach().contiguous().cpu() for k, v in
               get_peft_model_state_dict(unet, adapter_name=name).items()}
    meta = {"format": FORMAT, "rank": str(config.r), "alpha": str(config.lora_alpha),
            "target_modules": str(config.target_modules)}
    meta.update({k: json.dumps(v) for k, v in (extra_meta or {}).items()})
    atomic_write_bytes(path, save(tensors, metadata=meta))


def read_lora(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from core.model.adapter import read_fmu_file

    return read_fmu_file(path, FORMAT, "LoRA file")


def load_lora_weights(unet, tensors: dict, name: str = ADAPTER_NAME) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(unet, tensors, adapter_name=name)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"LoRA weights do not fit this UNet: {unexpected[:3]} ...")


def apply_lora(model, path: Path, scale: float = 1.0, name: str = ADAPTER_NAME) -> None:
    """Put the LoRA of `path` on `model.unet` (a FaceMakeUp) with weight `scale`."""
    tensors, meta = read_lora(Path(path))
    if name in (getattr(model.unet, "peft_config", {}) or {}):
        raise ValueError(f"a LoRA named {name!r} is already applied")
    add_finetune_lora(model.unet, int(meta["rank"]), float(meta["alpha"]), name=name, weight=scale)
    load_lora_weights(model.unet, tensors, name)
    model.unet.to(model.device, model.dtype)
