"""`fmu train` / `fmu finetune`: everything they are given, checked before the run folder is
touched or a model is built.

The data (a prepared manifest), the base model (preset, diffusers folder or hub id in the cache),
the adapter to start from, the image encoder and the L_id face model must exist and be readable,
and the parts must fit: the prepared face embeddings' width, the image encoder's hidden width and
the base's cross-attention width against the adapter's (core/model/parts.py), read from configs
and file headers. Each problem is one UsageError (exit 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmu.core.errors import UsageError, first_line
from fmu.core.faces import embedding_width
from fmu.core.model.parts import AdapterWidths, adapter_widths, check_widths, image_encoder_width, unet_config_of
from fmu.core.model.spec import resolve_model

from .config import TrainConfig
from .data import read_training_manifest


def model_sources(cfg: TrainConfig) -> tuple[str | Path, Path | None]:
    """(base, the adapter training starts from: None for a fresh one), as `build_model` loads them."""
    spec = resolve_model(cfg.preset, cfg.base_model, cfg.init_adapter, adapter_flag=None)
    return spec.base, spec.adapter


def check_training(cfg: TrainConfig, manifest: Path) -> None:
    """UsageError for the first unusable input or mismatched part of a training run."""
    base, init = model_sources(cfg)
    unet = unet_config_of(base)
    clip = image_encoder_width(base, None, cfg.image_encoder)
    if cfg.lambda_id > 0 and cfg.id_model is not None and not Path(cfg.id_model).is_file():
        raise UsageError(f"--id-model {cfg.id_model}: no such file (an ArcFace ONNX, e.g. w600k_r50.onnx)")
    if cfg.lambda_id > 0 and cfg.id_model is None and (cfg.base_model or not cfg.preset):
        raise UsageError("L_id needs a face-recognition ONNX: give --id-model (e.g. w600k_r50.onnx) or --lambda-id 0")
    if init is not None:
        widths = adapter_widths(init)
        source = init
    else:  # a fresh adapter takes the base's widths and the configured embedding width
        widths = AdapterWidths(cfg.id_embed_dim, None, None)
        source = "being created (--id-embed-dim)"
    encoder = cfg.image_encoder or f"{base}/image_encoder"
    check_widths(source, widths, clip=(encoder, clip), cross=(base, int(unet.get("cross_attention_dim", 0))))
    face = data_embedding_width(manifest)
    if face is not None and widths.id_embed_dim is not None and face != widths.id_embed_dim:
        backend = {128: "dlib", 512: "insightface"}.get(widths.id_embed_dim)
        hint = f"prepare it with --face-backend {backend}" if backend else "prepare it with the matching backend"
        raise UsageError(f"the prepared data {manifest} holds {face}-d face embeddings but the adapter {source} "
                         f"expects {widths.id_embed_dim}-d: {hint}")


def check_finetune_backend(adapter: Path, face_backend: str, face_models: Path | None = None) -> None:
    """Before a plain image folder is prepared for `fmu finetune`: the face backend must make the
    embeddings the adapter takes (else the preparation is wasted and training fails after it)."""
    check_widths(adapter, adapter_widths(adapter), face=(face_backend, embedding_width(face_backend, face_models)))


def data_embedding_width(manifest: Path) -> int | None:
    """The face embedding width of a prepared manifest (its first row's face cache entry)."""
    df = read_training_manifest(manifest)
    if "face_file" not in df.columns:
        raise UsageError(f"{manifest} is not prepared (no 'face_file'); run `fmu prepare` first")
    if df.height == 0:
        return None
    entry = Path(str(df["face_file"][0]))
    entry = entry if entry.is_absolute() else Path(manifest).parent / entry
    try:
        with np.load(entry, allow_pickle=False) as z:
            return int(z["embedding"].shape[-1])
    except (OSError, KeyError, ValueError) as exc:
        raise UsageError(f"{manifest}: its face cache entry {entry} is unreadable ({first_line(exc, 120)}); "
                         "run `fmu prepare` again") from None
