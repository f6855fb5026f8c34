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

from ..devices import device_type
from ..errors import UsageError, first_line
from ..faces import embedding_width
from ..model.spec import ModelSpec
from ..shading.reconstruct import mesh_model_problem
from ..shading.render import resolve_backend
from .config import GenerateConfig


@dataclass
class CheckedRun:
    """A generate run whose options all check out: what run_generate needs from the checks."""

    cfg: GenerateConfig
    manifest: object       # the manifest as read (polars DataFrame), before validation
    model_spec: ModelSpec  # base, adapter, default image size, model identity for run.json
    devices: list[str]
    tokenizer: object      # None on a re-run (OUT has results): loaded when a row needs work


def check_model_files(cfg: GenerateConfig, base, adapter) -> None:
    """Base, adapter, LoRA files, VAE and image encoder usable, and their widths in agreement."""
    # deferred: diffusers (config classes); the options are checked before any model library loads
    from ..model.parts import adapter_widths, check_widths, image_encoder_width, unet_config_of

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
    # fp32 on the CPU has nothing to probe: torch need not load for it (a finished job's re-run)
    if not (all(device_type(d) == "cpu" for d in devices) and {cfg.precision, cfg.vae_precision} <= {"auto", "fp32"}):
        from ..model.load import resolve_dtype  # deferred: imports torch

        for device in dict.fromkeys(devices):  # a precision a device cannot run: a usage error, not N failed workers
            resolve_dtype(cfg.precision, device)
            if cfg.vae_precision != "auto":
                resolve_dtype(cfg.vae_precision, device)
    if cfg.offload and any(d == "cpu" for d in devices):
        raise UsageError(f"--offload moves models between CPU and an accelerator; it needs a cuda, xpu or mps "
                         f"device, not {cfg.device}")


def check_renderer(cfg: GenerateConfig) -> None:
    if not cfg.shading:
        return
    try:
        resolve_backend(cfg.renderer)
    except (RuntimeError, ValueError) as exc:  # pytorch3d asked for and not installed
        raise UsageError(f"--renderer {cfg.renderer}: {first_line(exc)}") from None
    problem = mesh_model_problem()   # Python 3.13+ without face_landmarker.task: every row would fail
    if problem:
        raise UsageError(f"the shading channel: {problem}")


def load_tokenizer(source, what: str = "base model"):
    """The CLIP tokenizer of a base model (its `tokenizer/`) or of a tokenizer folder: what the
    prompt-length check counts with. A folder without tokenizer files is a UsageError (transformers
    would quietly build an empty tokenizer from it)."""
    subfolder = tokenizer_subfolder(source, what)
    from transformers import CLIPTokenizer  # deferred: heavy

    try:
        return CLIPTokenizer.from_pretrained(str(source), subfolder=subfolder, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"{what} {source}: cannot read its CLIP tokenizer ({first_line(exc, 160)})") from None


def tokenizer_subfolder(source, what: str = "base model") -> str:
    """Where the tokenizer files of `source` are (`tokenizer` or the folder itself, ""), found without
    loading a library (a hub id asks the local cache); a UsageError when there are none."""
    for subfolder in ("tokenizer", ""):
        if _has_tokenizer_files(source, subfolder):
            return subfolder
    raise UsageError(f"{what} {source}: no CLIP tokenizer there (vocab.json and merges.txt, or tokenizer.json, in "
                     "the folder or its tokenizer/; a hub id must be in the local cache)")


def _has_tokenizer_files(source, subfolder: str) -> bool:
    names = ("vocab.json", "tokenizer.json")
    path = Path(str(source)).expanduser()
    if path.is_dir():
        return any((path / subfolder / name).is_file() for name in names)
    from huggingface_hub import try_to_load_from_cache  # deferred: heavy; only a hub id needs it

    try:
        return any(isinstance(try_to_load_from_cache(str(source), f"{subfolder}/{name}".lstrip("/")), str)
                   for name in names)
    except ValueError:  # not a hub id either (huggingface_hub's validation error is a ValueError)
        return False


def _check_vae(vae) -> None:
    from diffusers import AutoencoderKL  # deferred: heavy

    try:
        AutoencoderKL.load_config(str(vae), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--vae {vae}: not a diffusers AutoencoderKL folder or a hub id in the local cache "
                         f"({first_line(exc, 160)})") from None
