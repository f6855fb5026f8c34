"""Do the parts of a model fit together? Read from config files and file headers, before any weight
is loaded.

An adapter fixes three widths: the face embedding it projects (`id_embed_dim`: 512 for insightface's
ArcFace, 128 for dlib), the CLIP image encoder's hidden width its resampler reads (`clip_hidden_dim`:
1280 for CLIP ViT-H/14) and the UNet cross-attention width its tokens enter (`embed_dims`: 768 for
SD1.5). A mismatch used to surface only after the whole model had loaded, as a raw `mat1 and mat2
shapes cannot be multiplied` on every row; `check_widths` names the flag to change instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from ..errors import UsageError, first_line
from .weights_io import ADAPTER_FORMAT, is_single_file, looks_like_safetensors, read_safetensors_metadata, read_state

# torch, diffusers and transformers are imported inside the functions that need them (a pickle's
# shapes, a hub id's config): the checks of local folders and safetensors files run without them, so
# a re-run of a finished job answers in seconds (bench/cli_start.py)


@dataclass
class AdapterWidths:
    id_embed_dim: int | None       # None: not found in the file (the full loader will say why)
    clip_hidden_dim: int | None
    embed_dims: int | None


def adapter_widths(path: str | Path) -> AdapterWidths:
    """The widths an adapter file expects: from an fmu adapter's metadata, or from the tensor shapes
    of an IP-Adapter-layout file (a safetensors header, or a pickle read with weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"adapter {path}: no such file")
    if path.suffix == ".safetensors" or looks_like_safetensors(path):
        meta = read_safetensors_metadata(path)
        if meta.get("format") == ADAPTER_FORMAT:
            cfg = json.loads(meta.get("config", "{}"))
            return AdapterWidths(cfg.get("id_embed_dim"), cfg.get("clip_hidden_dim"), cfg.get("embed_dims"))
        shapes = _safetensors_shapes(path)
    else:
        shapes = _pickle_shapes(path)

    def dim(key: str, axis: int) -> int | None:
        shape = shapes.get(f"image_proj.{key}")
        return int(shape[axis]) if shape is not None and len(shape) > axis else None

    return AdapterWidths(dim("proj.0.weight", 1), dim("perceiver_resampler.proj_in.weight", 1),
                         dim("norm.weight", 0))


def _safetensors_shapes(path: Path) -> dict[str, tuple]:
    with safe_open(str(path), framework="numpy") as fh:  # a header read: numpy, not torch
        return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118  (not a dict)


def _pickle_shapes(path: Path) -> dict[str, tuple]:
    """Shapes of `image_proj` tensors, flattened to `image_proj.<key>`. mmap: a zip-format file's
    tensors are mapped, not read (a legacy-format one is read whole, still weights_only)."""
    import torch  # deferred: heavy; only a pickle file needs it

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  legacy format, or not a tensor file: read_state says which
        state = read_state(path)
    if not isinstance(state, dict):
        return {}
    if isinstance(state.get("image_proj"), dict):
        return {f"image_proj.{k}": tuple(v.shape) for k, v in state["image_proj"].items() if hasattr(v, "shape")}
    return {str(k): tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}


def unet_config_of(base: str | Path, base_config: str | Path | None = None) -> dict:
    """The base model's UNet config (diffusers folder, hub id in the local cache, or a single file's
    `base_config`), with a one-line UsageError when there is none to read."""
    text = str(base)
    single = is_single_file(base)
    if single:
        if Path(text).suffix == ".safetensors" and not looks_like_safetensors(Path(text)):
            raise UsageError(f"base model {text}: not a readable safetensors file (corrupted or truncated?)")
        if base_config is None:
            raise UsageError(f"base model {text} is a single file: pass --base-config with an SD1.5 diffusers "
                             "folder (or a hub id in the local cache) for its component configs")
    elif Path(text).expanduser().exists() and not Path(text).expanduser().is_dir():
        raise UsageError(f"base model {text}: not a diffusers folder, and not a .safetensors/.ckpt checkpoint")
    elif text.startswith(("/", "./", "../", "~")) and not Path(text).expanduser().exists():
        raise UsageError(f"base model {text}: no such file or folder")
    source = base_config if single else base
    local = Path(str(source)).expanduser() / "unet" / "config.json"
    try:
        if local.is_file():  # a diffusers folder: its config, read as diffusers' load_config reads it
            config = json.loads(local.read_text(encoding="utf-8"))
            if not isinstance(config, dict):
                raise ValueError(f"{local} is not a config (a JSON object)")
            return config
        from diffusers import UNet2DConditionModel  # deferred: heavy; a hub id in the cache needs it

        return dict(UNet2DConditionModel.load_config(str(source), subfolder="unet", local_files_only=True))
    except (OSError, ValueError) as exc:
        what = "--base-config" if single else "base model"
        raise UsageError(f"{what} {source}: no UNet config (a diffusers SD1.5 folder, or a hub id in the "
                         f"local Hugging Face cache; fmu does not download): {first_line(exc, 160)}") from None


def _config_file(source, subfolder: str) -> Path:
    """`config.json` of a local folder (or its subfolder), else of a hub id in the local cache."""
    folder = Path(str(source)).expanduser()
    if folder.is_dir():
        found = folder / subfolder / "config.json"
        if not found.is_file():
            raise OSError(f"no config.json in {found.parent}")
        return found
    from transformers.utils import cached_file  # deferred: heavy; only a hub id needs it

    found = cached_file(str(source), "config.json", subfolder=subfolder, local_files_only=True)
    if found is None:
        raise OSError("no config.json there")
    return Path(found)


def image_encoder_width(base: str | Path, base_config: str | Path | None, image_encoder: str | Path | None) -> int:
    """Hidden width of the CLIP image encoder a run would load (load.load_base's choice: the given
    folder, else the base's `image_encoder/`), from its config."""
    single = is_single_file(base)
    source = image_encoder or (base_config if single else base)
    try:
        if source is None:
            raise OSError("a single-file checkpoint holds no image encoder")
        # the file itself: CLIPVisionConfig.from_pretrained quietly returns defaults for a folder without it
        found = _config_file(source, "image_encoder" if image_encoder is None else "")
        config = json.loads(Path(found).read_text())
        hidden = config.get("hidden_size") or (config.get("vision_config") or {}).get("hidden_size")
        if not isinstance(hidden, int):
            raise ValueError("its config.json has no hidden_size: not a CLIP vision model")
        return hidden
    except (OSError, ValueError) as exc:
        where = f"{source}/image_encoder" if image_encoder is None and source is not None else source
        raise UsageError(f"no CLIP image encoder at {where} (give --image-encoder with a CLIP vision model "
                         f"folder): {first_line(exc, 160)}") from None


def width_problems(adapter: str | Path, widths: AdapterWidths, *, face: tuple[str, int] | None = None,
                   clip: tuple[str, int] | None = None, cross: tuple[str, int] | None = None) -> list[str]:
    """Each width that does not match the adapter's, as a sentence naming the flag to change.
    `face`: (backend name, embedding width); `clip`: (encoder, hidden width); `cross`: (base, width)."""
    problems = []
    if face is not None and widths.id_embed_dim is not None and face[1] != widths.id_embed_dim:
        name, dim = face
        other = {128: " (dlib's)", 512: " (insightface's ArcFace)"}.get(widths.id_embed_dim, "")
        problems.append(f"--face-backend {name} gives {dim}-d face embeddings but the adapter {adapter} expects "
                        f"{widths.id_embed_dim}-d{other}: choose the face backend the adapter was trained with")
    if clip is not None and widths.clip_hidden_dim is not None and clip[1] != widths.clip_hidden_dim:
        problems.append(f"the image encoder {clip[0]} is {clip[1]} wide but the adapter {adapter} reads "
                        f"{widths.clip_hidden_dim}-wide CLIP states: give --image-encoder the encoder it was "
                        "trained with (CLIP ViT-H/14 for FaceID-PlusV2)")
    if cross is not None and widths.embed_dims is not None and cross[1] != widths.embed_dims:
        problems.append(f"the base model {cross[0]} has cross-attention width {cross[1]} but the adapter "
                        f"{adapter} was made for {widths.embed_dims} (SD1.5: 768): give --base-model the "
                        "base it was trained on, or an adapter for this base")
    return problems


def check_widths(adapter: str | Path, widths: AdapterWidths, **parts) -> None:
    problems = width_problems(adapter, widths, **parts)
    if problems:
        raise UsageError("; ".join(problems))
