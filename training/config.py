"""Training configuration: plain values, defaults = the authors' recipe (DESIGN.md §3).

Precedence: command-line flags > TOML file (`--config`) > these defaults. The TOML file is flat
(`lr = 1e-4`, `batch_size = 8`, ...) or has the same keys under a `[train]` table.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from core.errors import UsageError


@dataclass
class TrainConfig:
    data: Path | None = None              # prepared manifest (DATA/train.parquet) or its folder
    out: Path = Path("runs/train")
    mode: str = "full"                    # full: projection + IP/LoRA + ShadingNet; lora: new LoRA only
    # model
    preset: str | None = "tiny"
    base_model: str | None = None
    init_adapter: Path | None = None      # start from an fmu adapter (default: the preset's / fresh)
    image_encoder: str | None = None
    id_embed_dim: int = 512               # fresh adapters only (ArcFace 512; dlib 128)
    lora_rank: int = 128                  # fresh adapters; in mode=lora the new LoRA's rank
    resolution: int | None = None         # default: 512, or the preset's size
    face_crop: str | None = None          # CLIP face image: aligned | wide; default the init adapter's
                                          # (fresh: aligned); recorded in the adapter written
    # optimisation (authors: AdamW 1e-4, wd 1e-2, bf16, batch 8 per GPU)
    lr: float = 1e-4
    weight_decay: float = 1e-2
    lr_schedule: str = "constant"         # any diffusers.optimization scheduler name
    warmup_steps: int = 0
    batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str | None = None    # default: bf16 on CUDA, no (fp32) on CPU
    max_steps: int = 1000
    seed: int = 0
    workers: int = 0                      # DataLoader worker processes
    # the method
    image_drop: float = 0.5               # CLIP image input zeroed (authors' clip image drop)
    caption_drop: float = 0.05
    lambda_map: float = 1e-3
    lambda_id: float = 1.0                # fmu's choice: the paper gives no value
    id_t_min: int = 0
    id_t_max: int = 500                   # x̂0 is too blurry to embed at higher noise
    id_model: Path | None = None          # ArcFace ONNX (w600k_r50.onnx); tiny preset: a toy one
    s_scale: float = 1.0                  # FaceID-PlusV2 shortcut weight while training
    shading_scale: float = 1.0
    # bookkeeping
    checkpoint_every: int = 20000
    keep_checkpoints: int = 3
    resume: str | None = None             # "latest" or a checkpoint folder
    validate_every: int = 0               # 0: never
    validation_samples: int = 2
    validation_steps: int = 20            # denoising steps of validation images
    log_every: int = 1

    def resolved_mixed_precision(self, cuda: bool) -> str:
        return self.mixed_precision or ("bf16" if cuda else "no")

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


PATH_FIELDS = {"data", "out", "init_adapter", "id_model"}


def load_config(toml_path: Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """Defaults, then the TOML file, then the non-None overrides (command-line flags)."""
    values: dict = {}
    if toml_path is not None:
        try:
            raw = tomllib.loads(Path(toml_path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read config {toml_path}: {exc}") from None
        values.update(raw.get("train", raw))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"unknown training setting(s): {', '.join(unknown)}")
    for key in PATH_FIELDS & set(values):
        values[key] = Path(values[key])
    cfg = TrainConfig(**values)
    if cfg.mode not in ("full", "lora"):
        raise UsageError("mode must be 'full' or 'lora'")
    if cfg.face_crop not in (None, "aligned", "wide"):
        raise UsageError(f"face_crop {cfg.face_crop!r}: use aligned or wide")
    if cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.max_steps < 1:
        raise UsageError("batch_size, grad_accum and max_steps must be >= 1")
    return cfg
