"""Everything a generate run is given, checked before the output folder is touched or a progress
bar is drawn, and also when nothing is left to generate.

Each path or name that points at something unusable (a base model folder or hub id, a single file
without its configs, an adapter, LoRA, VAE or image-encoder folder, the tokenizer, a renderer that is
not installed, a face backend that cannot run, a precision the device lacks) is a one-line usage
error (exit 2), never a traceback from a worker. Then the parts must fit: the face backend's
embedding width, the image encoder's hidden width and the base's cross-attention width against what
the adapter expects (core/model/parts.py), read from configs and headers, before any weight loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError, first_line
from ..faces import embedding_width
from ..model.parts import adapter_widths, check_widths, image_encoder_width, unet_config_of
from ..shading.render import resolve_backend
from .config import GenerateConfig


@dataclass
class CheckedRun:
    """A generate run whose options all check out: what run_generate needs from the checks."""

    cfg: GenerateConfig
    manifest: object       # the manifest as read (polars DataFrame), before validation
    model_spec: tuple      # (base, adapter, default image size, model identity for run.json)
    devices: list[str]
    tokenizer: object


def check_model_files(cfg: GenerateConfig, base, adapter) -> None:
    """Base, adapter, LoRA files, VAE and image encoder usable, and their widths in agreement."""
    unet = unet_config_of(base, cfg.base_config)
    widths = adapter_widths(adapter)
    if cfg.adapter_lora is not None and not Path(cfg.adapter_lora).is_file():
        raise UsageError(f"--adapter-lora {cfg.adapter_lora}: no such file")
    if cfg.vae is not None:
        _check_vae(cfg.vae)
    encoder = cfg.image_encoder or f"{cfg.base_config or base}/image_encoder"
    check_widths(adapter, widths,
                 face=(cfg.face_backend, embedding_width(cfg.face_backend, cfg.face_models)),
                 clip=(encoder, image_encoder_width(base, cfg.base_config, cfg.image_encoder)),
                 cross=(base, int(unet.get("cross_attention_dim", 0))))


def check_devices(cfg: GenerateConfig, devices: list[str]) -> None:
    from ..model.load import resolve_dtype  # deferred: imports torch

    for device in devices:
        resolve_dtype(cfg.precision, device)  # fp16 / bf16 without CUDA: a usage error
    if cfg.offload and not all(d.startswith("cuda") for d in devices):
        raise UsageError(f"--offload moves models between CPU and GPU; it needs CUDA devices, not {cfg.device}")


def check_renderer(cfg: GenerateConfig) -> None:
    if not cfg.shading:
        return
    try:
        resolve_backend(cfg.renderer)
    except (RuntimeError, ValueError) as exc:  # pytorch3d asked for and not installed
        raise UsageError(f"--renderer {cfg.renderer}: {first_line(exc)}") from None


def load_tokenizer(source):
    """The base's CLIP tokenizer (what the prompt-length check counts with)."""
    from transformers import CLIPTokenizer  # deferred: heavy

    path = Path(str(source))
    try:
        if (path / "tokenizer").is_dir():
            return CLIPTokenizer.from_pretrained(path / "tokenizer")
        return CLIPTokenizer.from_pretrained(str(source), subfolder="tokenizer", local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"no CLIP tokenizer at {source}/tokenizer: {first_line(exc, 160)}") from None


def _check_vae(vae) -> None:
    from diffusers import AutoencoderKL  # deferred: heavy

    try:
        AutoencoderKL.load_config(str(vae), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--vae {vae}: not a diffusers AutoencoderKL folder or a hub id in the local cache "
                         f"({first_line(exc, 160)})") from None
