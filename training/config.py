"""Training configuration: plain values, defaults = the authors' recipe (DESIGN.md §3).

Precedence: command-line flags > TOML file (`--config`) > a command's own defaults (`fmu finetune`:
500 steps, batch 2) > these defaults. The TOML file is flat (`lr = 1e-4`, `batch_size = 8`, ...) or
has the same keys under a `[train]` table; each value must have its field's type (an int field
refuses 2.0, as TOML itself tells 2 from 2.0).
"""

from __future__ import annotations

import tomllib
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from fmu.core.errors import UsageError
from fmu.core.faces.crops import CROP_STYLES


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
    mixed_precision: str | None = None    # one of MIXED_PRECISIONS; default: bf16 on a GPU, no (fp32) on CPU
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
    checkpoint_every: int | None = None   # default: max_steps / 10, at most the authors' 20000
    keep_checkpoints: int = 3
    resume: str | None = None             # "latest" or a checkpoint folder
    validate_every: int = 0               # 0: never
    validation_samples: int = 2
    validation_steps: int = 20            # denoising steps of validation images
    log_every: int = 1

    def resolved_checkpoint_every(self) -> int:
        """Steps between checkpoints (0: none but the last): as set, else a tenth of the run (the
        authors' 20000 was meant for runs of hundreds of thousands of steps; at 1000 steps it
        never saved)."""
        if self.checkpoint_every is not None:
            return self.checkpoint_every
        return min(AUTHORS_CHECKPOINT_EVERY, max(1, round(self.max_steps / 10)))

    def resolved_mixed_precision(self, on_gpu: bool) -> str:
        return self.mixed_precision or ("bf16" if on_gpu else "no")

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


AUTHORS_CHECKPOINT_EVERY = 20000
# `fmu finetune`'s own defaults: a small identity or domain set, a small LoRA
FINETUNE_DEFAULTS = {"max_steps": 500, "batch_size": 2, "lora_rank": 16}
MIXED_PRECISIONS = ("no", "bf16", "fp16")  # accelerate's names
MASK_MODES = ("auto", "given")  # `fmu prepare --masks`: region masks from the parser, or only given ones
PREPARE_MULTI_FACE = ("largest", "skip")  # fmu prepare, a photo of several faces: the biggest, or leave it out
# fmu prepare, photos kept once: near (same bytes, or a near-identical face in one identity folder),
# exact (same bytes only: keeps deliberate variants such as mirrored copies), off
PREPARE_DEDUPE = ("near", "exact", "off")
# Two photos of one identity folder whose faces' embeddings have a cosine above this are one photo
# (re-encoded, resized, lightly edited): the later is excluded as `duplicate_of`. Different photos of
# one person stay below it on both backends (ArcFace: ~0.4-0.8; dlib's 128-d: ~0.9-0.96), copies
# land at ~0.99+.
NEAR_DUPLICATE_COSINE = 0.98
TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", Path: "a path (string)"}
# need step rules / metrics that the training loop does not pass
UNSUPPORTED_SCHEDULES = {"piecewise_constant", "reduce_lr_on_plateau"}


def _typed(key: str, value, hint):
    """`value` checked against the field's annotation; Paths from strings, floats from ints."""
    options = typing.get_args(hint) or (hint,)
    if value is None and type(None) in options:
        return None
    if not isinstance(value, bool):  # bool is an int to Python, never to a setting
        for kind in options:
            if kind is Path and isinstance(value, (str, Path)):
                return Path(value)
            if (kind is str and isinstance(value, str)) or (kind is int and isinstance(value, int)):
                return value
            if kind is float and isinstance(value, (int, float)):
                return float(value)
    expected = " or ".join(TYPE_NAMES[k] for k in options if k in TYPE_NAMES)
    raise UsageError(f"setting {key} = {value!r}: expected {expected}")


def _lr_schedules() -> list[str]:
    from diffusers.optimization import SchedulerType  # deferred: heavy (diffusers); the CLI imports this module

    return [s.value for s in SchedulerType if s.value not in UNSUPPORTED_SCHEDULES]


def load_config(toml_path: Path | None = None, overrides: dict | None = None,
                defaults: dict | None = None) -> TrainConfig:
    """TrainConfig's defaults, then `defaults` (a command's own), then the TOML file, then the
    non-None overrides (command-line flags)."""
    values: dict = dict(defaults or {})
    if toml_path is not None:
        try:
            raw = tomllib.loads(Path(toml_path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read config {toml_path}: {exc}") from None
        table = raw.get("train", raw)
        if not isinstance(table, dict):
            raise UsageError(f"config {toml_path}: 'train' must be a table ([train])")
        values.update(table)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    hints = typing.get_type_hints(TrainConfig)
    unknown = sorted(set(values) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise UsageError(f"unknown training setting(s): {', '.join(unknown)}")
    cfg = TrainConfig(**{key: _typed(key, value, hints[key]) for key, value in values.items()})
    if cfg.mode not in ("full", "lora"):
        raise UsageError("mode must be 'full' or 'lora'")
    if cfg.face_crop is not None and cfg.face_crop not in CROP_STYLES:
        raise UsageError(f"face_crop {cfg.face_crop!r}: use aligned or wide")
    if cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.max_steps < 1:
        raise UsageError("batch_size, grad_accum and max_steps must be >= 1")
    if (cfg.checkpoint_every or 0) < 0 or cfg.keep_checkpoints < 0:
        raise UsageError("checkpoint_every and keep_checkpoints must be >= 0")
    if cfg.mixed_precision is not None and cfg.mixed_precision not in MIXED_PRECISIONS:
        raise UsageError(f"mixed_precision {cfg.mixed_precision!r}: use one of {', '.join(MIXED_PRECISIONS)}")
    # the default needs no lookup (a test holds it is diffusers'): a plain `fmu train` with a bad
    # --data then answers before diffusers loads
    if cfg.lr_schedule != TrainConfig.lr_schedule and cfg.lr_schedule not in _lr_schedules():
        raise UsageError(f"lr_schedule {cfg.lr_schedule!r}: use one of {', '.join(_lr_schedules())}")
    # the attention maps L_map reads are resolution/16 wide: the latent (resolution/8) must halve evenly
    if cfg.resolution is not None and (cfg.resolution < 16 or cfg.resolution % 16):
        raise UsageError(f"resolution {cfg.resolution}: must be a positive multiple of 16")
    return cfg


def prepared_manifest_path(data: Path | None) -> Path:
    """DATA/train.parquet (or the manifest given), checked before any model is built."""
    if data is None:
        raise UsageError("--data is required: a prepared manifest (DATA/train.parquet) or its folder")
    manifest = Path(data) / "train.parquet" if Path(data).is_dir() else Path(data)
    if not manifest.is_file():
        raise UsageError(f"no prepared training manifest at {data} (run `fmu prepare` first)")
    return manifest
