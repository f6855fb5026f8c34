"""The options of a generate run and their defaults, in one place: `fmu generate` builds its flags
from `DEFAULTS`, and `run_generate` fills in what the user left open. Plain values, importable
without torch (the command line reads them before anything heavy loads).

The options come in groups, each handed whole to the part of the run that uses it:
`source` (how rows and references are read and analysed), `load` (which model loads and how),
`sampling` (the per-image settings), `output` (the output stage), `engine` (devices and how work
reaches them) and `gate` (best-of-N, gating.py). `GenerateConfig.from_options(manifest, out,
**flat)` is the one flat way in: each option by its own name (the flags with `_` for `-`)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from types import SimpleNamespace

from ..faces.crops import FRAME_SCALE
from ..model.settings import DEFAULTS as IMAGE
from ..model.settings import PROMPT_PREFIX, Settings
from .gating import Gate


@dataclass(frozen=True)
class SourceOptions:
    """How the rows' references are read and analysed (faces, frame, shading render, prompt)."""

    face_backend: str | None = None       # None: dlib for a preset, else insightface
    face_models: Path | None = None
    multi_face: str = "best"              # best | largest | error (core.faces.base)
    face_crop: str | None = None          # CLIP face image style; None: the adapter's own (core.faces.crops)
    frame: str = "face"                   # face | centre: the photo region generated (conditions.py)
    frame_scale: float = FRAME_SCALE      # face frame side / landmark-box side
    renderer: str = "auto"
    cache_dir: Path | None = None
    prefix: str = PROMPT_PREFIX


@dataclass(frozen=True)
class LoadOptions:
    """Which model loads and how (core/runner/worker.py `load_model`)."""

    preset: str | None = "tiny"
    base_model: str | None = None
    weights: Path | None = None           # a `fmu weights pull` folder: fills the model options left open
    adapter: Path | None = None
    image_encoder: str | None = None
    adapter_lora: Path | None = None      # h94-style separate LoRA file that belongs to --adapter
    lora: Path | None = None              # an fmu finetune LoRA (fmu-lora/1), applied on top
    lora_scale: float = 1.0
    force_lora: bool = False              # apply --lora even when it records another adapter
    vae: str | None = None                # VAE override (the authors used sd-vae-ft-mse)
    base_config: str | None = None        # diffusers folder / hub id for single-file bases
    precision: str = "auto"               # one of core.model.settings.PRECISIONS
    vae_precision: str = "auto"           # the VAE's (auto: as --precision; fp32 for a VAE that overflows)
    speed_lora: str | None = None         # a few-step LoRA (LCM / TCD / Hyper-SD), adapter fmu_speed
    speed_lora_scale: float = 1.0
    vae_decoder: str | None = None        # tiny:<folder or hub id>: an AutoencoderTiny decodes
    scheduler: str = "ddim"               # one of core.model.settings.SCHEDULERS
    vae_slicing: bool = False
    vae_tiling: bool = False
    compile: bool = False
    offload: bool = False
    shading: bool = True                  # the ShadingNet (3D channel); False: the identity channel alone


@dataclass(frozen=True)
class SamplingOptions:
    """The per-image settings (a manifest row may override steps, guidance_scale, id_scale)."""

    seed: int = 0
    steps: int = IMAGE.steps
    guidance_scale: float = IMAGE.guidance_scale
    id_scale: float = IMAGE.id_scale
    s_scale: float = IMAGE.s_scale
    shading_scale: float = IMAGE.shading_scale
    eta: float | None = None              # DDIM / TCD step noise; None: the sampler's usual (TCD 0.3)

    def settings(self, size: int, shading: bool) -> Settings:
        """The run's default image settings at `size`² (no shading: the 3D channel's scale is 0)."""
        return Settings(steps=self.steps, guidance_scale=self.guidance_scale, id_scale=self.id_scale,
                        s_scale=self.s_scale, shading_scale=self.shading_scale if shading else 0.0,
                        width=size, height=size, eta=self.eta)


@dataclass(frozen=True)
class OutputOptions:
    """The output stage (writers/)."""

    writer: str = "files"                 # files = OUT/images/<id>_<k>.png
    shard_size: int = 1000                # samples per .tar shard (--writer webdataset)
    save_conditions: bool = False


@dataclass(frozen=True)
class EngineOptions:
    """Devices, and how work units reach them (distribute.py)."""

    device: str = "cpu"
    engine: str | None = None             # inline | processes | torchrun | ray (None: inline for one device,
                                          # else processes); distribute.py
    ray_address: str | None = None        # --engine ray: None = `auto` when RAY_ADDRESS is set, else local
    ray_cpus: float = 1.0                 # --engine ray on CPU nodes: CPUs each actor reserves
    threads: int | None = None            # torch intra-op threads per worker (None: torch's default)
    batch_size: int = 4


DEFAULT_OUT = Path("runs/latest")
# the groups of GenerateConfig, by attribute name
GROUPS: dict[str, type] = {"source": SourceOptions, "load": LoadOptions, "sampling": SamplingOptions,
                           "output": OutputOptions, "engine": EngineOptions, "gate": Gate}
# each flat option name (a flag with `_` for `-`) -> the group that holds it
OPTION_GROUP: dict[str, str] = {f.name: group for group, cls in GROUPS.items() for f in fields(cls)}


@dataclass(frozen=True)
class GenerateConfig:
    manifest: Path
    out: Path = DEFAULT_OUT
    source: SourceOptions = field(default_factory=SourceOptions)
    load: LoadOptions = field(default_factory=LoadOptions)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    engine: EngineOptions = field(default_factory=EngineOptions)
    gate: Gate = field(default_factory=Gate)

    @classmethod
    def from_options(cls, manifest, out=DEFAULT_OUT, **options) -> GenerateConfig:
        """A config from flat options (`steps=30, device="cuda"`): each goes to its group;
        a TypeError names any option that is not one."""
        return cls(manifest=Path(manifest), out=Path(out)).with_options(**options)

    def with_options(self, **options) -> GenerateConfig:
        """A copy with flat options changed (each in its group); `manifest` and `out` too."""
        unknown = sorted(set(options) - set(OPTION_GROUP) - {"manifest", "out"})
        if unknown:
            raise TypeError(f"unknown generate options {', '.join(unknown)}; known: {', '.join(sorted(OPTION_GROUP))}")
        changes: dict = {name: options.pop(name) for name in ("manifest", "out") if name in options}
        for group in GROUPS:
            mine = {name: value for name, value in options.items() if OPTION_GROUP[name] == group}
            if mine:
                changes[group] = replace(getattr(self, group), **mine)
        return replace(self, **changes)

    def flat(self) -> dict:
        """Every option by its flat name, with `manifest` and `out`: what run.json records."""
        values = {"manifest": self.manifest, "out": self.out}
        for group in GROUPS:
            values.update({f.name: getattr(getattr(self, group), f.name) for f in fields(GROUPS[group])})
        return values


# every option's default by its flat name (`DEFAULTS.batch_size`)
DEFAULTS = SimpleNamespace(**{f.name: f.default for cls in GROUPS.values() for f in fields(cls)
                              if f.default is not MISSING}, out=DEFAULT_OUT)
