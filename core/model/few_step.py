"""Few-step sampling: a speed LoRA next to fmu's own, and a tiny VAE decoder.

- `load_speed_lora(pipe, source)`: an LCM-LoRA, TCD-LoRA or Hyper-SD LoRA (a .safetensors file, a
  folder holding one, or a hub id in the local cache), in diffusers or kohya format, loaded by
  diffusers' `load_lora_weights` as its own peft adapter `fmu_speed`, beside the identity LoRA
  (`fmu_id`) and a finetune LoRA (`fmu_ft`). The weights of all of them are set per batch
  (`lora.set_lora_weights`); the speed LoRA keeps its weight when the identity channel is off.
- `load_tiny_decoder(spec)`: `tiny:<folder or hub id>`, diffusers' `AutoencoderTiny` (TAESD), which
  decodes SD1.5 latents in a fraction of the full VAE's time. Decoding only: training and anything
  that encodes keeps the full VAE.

The samplers these LoRAs are trained for (LCMScheduler, TCDScheduler, DDIM with trailing
timesteps) are `load.make_scheduler`'s.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..errors import UsageError, first_line
from . import lora as L

TINY_PREFIX = "tiny:"
CACHE_ONLY = ("a hub id is read from the local cache only (only `fmu weights pull` downloads): fetch it "
              "first with `fmu weights pull`, `hf download <id>`, or give a folder")


def load_speed_lora(pipe, source: str | Path, offline: bool = True) -> None:
    """Load a few-step LoRA into `pipe` (UNet, and text encoder when the file has weights for it)
    as adapter `fmu_speed`; UsageError when it cannot be read or fits nothing of this model."""
    text = str(source)
    if text.startswith(("/", "./", "../", "~")) and not Path(text).expanduser().exists():
        raise UsageError(f"--speed-lora {text}: no such file or folder")
    try:
        with warnings.catch_warnings():  # several adapters on one model is the point here
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            pipe.load_lora_weights(str(Path(text).expanduser()) if Path(text).expanduser().exists() else text,
                                   adapter_name=L.SPEED_ADAPTER, local_files_only=offline)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UsageError(f"cannot load speed LoRA {text} (an LCM / TCD / Hyper-SD LoRA for SD1.5, diffusers "
                         f"or kohya format): {first_line(exc, None)}; {CACHE_ONLY}") from None
    if L.SPEED_ADAPTER not in L.adapter_names(pipe):
        raise UsageError(f"speed LoRA {text}: none of its weights fits this model's UNet or text encoder")


def parse_decoder(spec: str | None) -> str | None:
    """The folder or hub id of `tiny:<folder or hub id>`; None for no override."""
    if spec is None:
        return None
    if not spec.startswith(TINY_PREFIX) or not spec[len(TINY_PREFIX):].strip():
        raise UsageError(f"--vae-decoder {spec!r}: use tiny:<folder or hub id> (a diffusers AutoencoderTiny, "
                         "e.g. tiny:madebyollin/taesd)")
    return spec[len(TINY_PREFIX):].strip()


def load_tiny_decoder(spec: str, latent_channels: int, dtype: torch.dtype, device, offline: bool = True):
    """The AutoencoderTiny named by `spec` (`tiny:<folder or hub id>`), on `device` in `dtype`."""
    from diffusers import AutoencoderTiny  # deferred: only runs that ask for a tiny decoder load it

    source = parse_decoder(spec)
    try:
        decoder = AutoencoderTiny.from_pretrained(source, torch_dtype=dtype, local_files_only=offline)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load tiny VAE decoder {source} (a diffusers AutoencoderTiny folder or hub id): "
                         f"{first_line(exc, None)}; {CACHE_ONLY}") from None
    if decoder.config.latent_channels != latent_channels:
        raise UsageError(f"tiny VAE decoder {source} decodes {decoder.config.latent_channels}-channel latents; "
                         f"this UNet makes {latent_channels}-channel ones (use an SD1.5 TAESD)")
    return decoder.to(device).eval()
