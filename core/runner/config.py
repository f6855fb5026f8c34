"""The options of a generate run and their defaults, in one place: `fmu generate` builds its flags
from `DEFAULTS`, and `run_generate` fills in what the user left open. Plain values, importable
without torch (the command line reads them before anything heavy loads)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from types import SimpleNamespace

from ..faces.crops import FRAME_SCALE
from ..model.settings import DEFAULTS as IMAGE
from ..model.settings import PROMPT_PREFIX
from .gating import Gate


@dataclass
class GenerateConfig:
    manifest: Path
    out: Path = Path("runs/latest")
    preset: str | None = "tiny"
    base_model: str | None = None
    weights: Path | None = None           # a `fmu weights pull` folder: fills the model options left open
    adapter: Path | None = None
    image_encoder: str | None = None
    face_backend: str | None = None       # None: dlib for a preset, else insightface
    face_models: Path | None = None
    multi_face: str = "best"              # best | largest | error (core.faces.base)
    face_crop: str | None = None          # CLIP face image style; None: the adapter's own (core.faces.crops)
    device: str = "cpu"
    engine: str | None = None             # inline | processes | torchrun | ray (None: inline for one device,
                                          # else processes); distribute.py
    ray_address: str | None = None        # --engine ray: None = `auto` when RAY_ADDRESS is set, else local
    ray_cpus: float = 1.0                 # --engine ray on CPU nodes: CPUs each actor reserves
    writer: str = "files"                 # the output stage (writers/): files = OUT/images/<id>_<k>.png
    shard_size: int = 1000                # samples per .tar shard (--writer webdataset)
    batch_size: int = 4
    seed: int = 0
    # per-image settings (a manifest row may override steps, guidance_scale, id_scale)
    steps: int = IMAGE.steps
    guidance_scale: float = IMAGE.guidance_scale
    id_scale: float = IMAGE.id_scale
    s_scale: float = IMAGE.s_scale
    shading_scale: float = IMAGE.shading_scale
    shading: bool = True
    frame: str = "face"                   # face | centre: the photo region generated (conditions.py)
    frame_scale: float = FRAME_SCALE      # face frame side / landmark-box side
    save_conditions: bool = False
    renderer: str = "auto"
    cache_dir: Path | None = None
    prefix: str = PROMPT_PREFIX
    threads: int | None = None            # torch intra-op threads per worker (None: torch's default)
    lora: Path | None = None              # an fmu finetune LoRA (fmu-lora/1), applied on top
    lora_scale: float = 1.0
    force_lora: bool = False              # apply --lora even when it records another adapter
    adapter_lora: Path | None = None      # h94-style separate LoRA file that belongs to --adapter
    vae: str | None = None                # VAE override (the authors used sd-vae-ft-mse)
    scheduler: str = "ddim"               # one of core.model.settings.SCHEDULERS
    base_config: str | None = None        # diffusers folder / hub id for single-file bases
    precision: str = "auto"               # one of core.model.settings.PRECISIONS
    vae_precision: str = "auto"           # the VAE's (auto: as --precision; fp32 for a VAE that overflows)
    speed_lora: str | None = None         # a few-step LoRA (LCM / TCD / Hyper-SD), adapter fmu_speed
    speed_lora_scale: float = 1.0
    vae_decoder: str | None = None        # tiny:<folder or hub id>: an AutoencoderTiny decodes
    eta: float | None = None              # DDIM / TCD step noise; None: the sampler's usual (TCD 0.3)
    vae_slicing: bool = False
    vae_tiling: bool = False
    compile: bool = False
    offload: bool = False
    # quality gating, best-of-N (gating.py): None = no threshold
    min_id_sim: float | None = None
    max_pose_err: float | None = None      # degrees
    max_light_err: float | None = None
    max_tries: int = 1
    keep_rejected: bool = False

    @property
    def gate(self) -> Gate:
        return Gate(self.min_id_sim, self.max_pose_err, self.max_light_err, self.max_tries, self.keep_rejected)


# every option's default by name (`DEFAULTS.batch_size`)
DEFAULTS = SimpleNamespace(**{f.name: f.default for f in fields(GenerateConfig) if f.default is not MISSING})
