"""LoRA on the UNet's attention layers: adding, reading, applying and writing LoRA states and files.

Every LoRA here is a named peft adapter on the UNet (diffusers' `add_adapter` / `set_adapters`,
peft's `get_peft_model_state_dict` / `set_peft_model_state_dict`) over the same layers
(`LORA_TARGETS`):

- `fmu_id` (`ID_ADAPTER`): the identity LoRA of an adapter checkpoint; its state is stored
  under `lora.` inside `adapter.safetensors` (see `adapter.py`).
- `fmu_ft` (`FINETUNE_ADAPTER`): a LoRA from `fmu finetune`, trained on top of an adapter whose
  own LoRA stays as it was. It is a file of its own (format "fmu-lora/1"): the adapter's peft-layout
  weights, with its rank, alpha and target pattern in the metadata. Applying it adds the same
  adapter and activates it next to the others, with weight `scale`.
- `fmu_speed` (`SPEED_ADAPTER`): a few-step LoRA (LCM-LoRA, TCD-LoRA, Hyper-SD) in diffusers or
  kohya format, loaded by diffusers' `load_lora_weights` (few_step.py); its targets are its own.

Which adapters are active, and with which weight, is set per batch with `set_lora_weights`
(diffusers' `set_adapters`): the weight of an adapter is its own, never a factor shared by all.

A finetune LoRA is trained against one adapter and means nothing on another (other images, no
error): its metadata records that adapter's identity, `adapter_sha256` = the sha256 of the adapter
file the model was loaded from (core.digests.file_digest, the same digest run.json records), and
`check_lora_adapter` compares it with the adapter a run uses. LoRAs written before the field
existed carry none; they load with a warning.

diffusers' `save_lora_adapter` / `load_lora_adapter` write and expect their own key prefix and
metadata, and infer the targets from the keys; fmu-lora/1 files predate this module and keep
loading, so the file is read and written here with the LoraConfig it records.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..digests import file_digest
from ..errors import UsageError
from ..images import atomic_write_bytes
from .weights_io import fmu_file_meta, read_fmu_file

FORMAT = "fmu-lora/1"
ID_ADAPTER = "fmu_id"
FINETUNE_ADAPTER = "fmu_ft"
ADAPTER_KEY = "adapter_sha256"  # LoRA metadata: the sha256 of the adapter file it was trained on
SPEED_ADAPTER = "fmu_speed"
# UNet attention only: the perceiver inside the image projection has to_q/to_k too.
LORA_TARGETS = r".*(down_blocks|mid_block|up_blocks)\..*attn[12]\.(to_q|to_k|to_v|to_out\.0)"


def add_lora(unet, rank: int, alpha: float | None = None, name: str = ID_ADAPTER, weight: float = 1.0) -> None:
    """A new, freshly initialised LoRA (B = 0) named `name`, active next to the existing ones;
    every adapter keeps weight 1 except the new one (`weight`)."""
    from peft import LoraConfig  # deferred: peft pulls in torch; file checks here run without it

    existing = list(getattr(unet, "peft_config", {}) or {})
    with warnings.catch_warnings():  # several adapters on one model is the point here
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                                    target_modules=LORA_TARGETS), adapter_name=name)
    unet.set_adapters(existing + [name], weights=[1.0] * len(existing) + [weight])


def has_lora(unet, name: str) -> bool:
    return name in (getattr(unet, "peft_config", None) or {})


def adapter_names(pipe) -> list[str]:
    """Every LoRA adapter on the pipeline's UNet or text encoder, in the order they were added."""
    names = {}
    for component in (pipe.unet, getattr(pipe, "text_encoder", None)):
        names.update(dict.fromkeys(getattr(component, "peft_config", None) or {}))
    return list(names)


def set_lora_weights(pipe, weights: dict[str, float]) -> None:
    """Activate exactly the adapters of `weights` whose weight is not 0, each with its own weight, on
    the UNet and the text encoder (diffusers' `set_adapters`; per component, since a pipeline-level
    call refuses an empty list). An adapter at 0 is left out rather than multiplied by 0: it costs
    nothing and the result is the model without it. peft's `set_adapter` also makes the active
    adapters trainable; which parameters train is the trainer's choice, so that is put back."""
    from diffusers.loaders.lora_base import set_adapters_for_text_encoder  # deferred: with peft, as above

    components = [c for c in (pipe.unet, getattr(pipe, "text_encoder", None))
                  if getattr(c, "peft_config", None)]
    trainable = [(p, p.requires_grad) for c in components for n, p in c.named_parameters() if "lora_" in n]
    for component in components:
        active = [n for n in component.peft_config if weights.get(n, 0) != 0]
        values = [float(weights[n]) for n in active]
        if component is pipe.unet:
            component.set_adapters(active, weights=values)
        else:
            set_adapters_for_text_encoder(active, component, values)
    for p, flag in trainable:
        p.requires_grad_(flag)


def lora_state(unet, name: str = ID_ADAPTER) -> dict:
    """The weights of LoRA `name`, peft layout (`<module>.lora_A.weight` / `.lora_B.weight`)."""
    from peft.utils import get_peft_model_state_dict  # deferred: with peft, as in add_lora

    return get_peft_model_state_dict(unet, adapter_name=name)


def load_lora_state(unet, state: dict, name: str = ID_ADAPTER) -> None:
    """Load peft-layout weights into the existing LoRA `name`; refused when any does not fit."""
    from peft.utils import set_peft_model_state_dict  # deferred: with peft, as in add_lora

    result = set_peft_model_state_dict(unet, state, adapter_name=name)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"LoRA weights do not fit this UNet: {unexpected[:3]} ...")


def lora_file_meta(path: Path) -> dict:
    """The header of a LoRA file (UsageError for a missing, unreadable or foreign file)."""
    return fmu_file_meta(Path(path), FORMAT, "LoRA file")


def read_lora_file(path: Path) -> tuple[dict, dict]:
    """(peft-layout tensors, metadata) of a LoRA file."""
    return read_fmu_file(Path(path), FORMAT, "LoRA file")


def write_lora_file(path: Path, unet, name: str = FINETUNE_ADAPTER, extra_meta: dict | None = None) -> None:
    """LoRA `name` as an fmu-lora/1 safetensors file: its weights and its LoraConfig."""
    from safetensors.torch import save  # deferred: it imports torch, as peft does

    config = unet.peft_config[name]
    tensors = {k: v.detach().contiguous().cpu() for k, v in lora_state(unet, name).items()}
    meta = {"format": FORMAT, "rank": str(config.r), "alpha": str(config.lora_alpha),
            "target_modules": str(config.target_modules)}
    meta.update({k: json.dumps(v) for k, v in (extra_meta or {}).items()})
    atomic_write_bytes(Path(path), save(tensors, metadata=meta))


def apply_lora_file(unet, path: Path, scale: float = 1.0, name: str = FINETUNE_ADAPTER) -> None:
    """Add the LoRA of `path` to `unet` as adapter `name` with weight `scale`."""
    tensors, meta = read_lora_file(path)
    if has_lora(unet, name):
        raise ValueError(f"a LoRA named {name!r} is already applied")
    add_lora(unet, int(meta["rank"]), float(meta["alpha"]), name=name, weight=scale)
    load_lora_state(unet, tensors, name)


def lora_adapter_digest(meta: dict) -> str | None:
    """The adapter identity a LoRA file records (None for LoRAs written before it was recorded)."""
    value = meta.get(ADAPTER_KEY)
    if not value:
        return None
    try:
        value = json.loads(value)
    except ValueError:
        pass
    return value if isinstance(value, str) and value else None


def check_lora_adapter(lora: Path, adapter: Path | None, force: bool = False) -> str | None:
    """Is LoRA file `lora` made for `adapter`? None when it is; a warning line when that cannot be
    told (an old LoRA without the record, an adapter that is not a file) or when `force` overrides
    a mismatch; a UsageError for a mismatch otherwise."""
    recorded = lora_adapter_digest(lora_file_meta(lora))
    if recorded is None:
        return (f"--lora {lora} does not record which adapter it was trained on (written by an older fmu): "
                "it is applied as is; images may differ from what it was trained for")
    if adapter is None or not Path(adapter).is_file():
        return f"--lora {lora}: the adapter {adapter} is not a file, so the LoRA's adapter cannot be checked"
    actual = file_digest(adapter)
    if actual == recorded:
        return None
    message = (f"--lora {lora} was trained on another adapter (sha256 {recorded[:12]}…), not on {adapter} "
               f"(sha256 {actual[:12]}…)")
    if force:
        return message + "; applied anyway (--force-lora)"
    raise UsageError(message + "; use the adapter it was finetuned from (its `fmu finetune --from`), or "
                     "--force-lora to apply it anyway")
