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

import math
from dataclasses import dataclass
from pathlib import Path

from ..devices import device_type, parse_devices
from ..errors import UsageError, first_line
from ..faces import embedding_width
from ..manifest import read_manifest
from ..manifest.schema import BOUNDS
from ..model.lora import check_lora_adapter
from ..model.spec import ModelSpec, resolve_model
from ..shading.reconstruct import mesh_model_problem
from ..shading.render import BACKENDS, resolve_backend
from ..weights.layout import ROLES, generate_options
from .conditions import parse_frame
from .config import GenerateConfig, LoadOptions, SamplingOptions, SourceOptions
from .distribute import pick_engine
from .gating import Gate
from .ranks import Ranks
from .results import ResultStore
from .writers import WRITERS


@dataclass
class CheckedRun:
    """A generate run whose options all check out: what run_generate needs from the checks."""

    cfg: GenerateConfig
    manifest: object       # the manifest as read (polars DataFrame), before validation
    model_spec: ModelSpec  # base, adapter, default image size, model identity for run.json
    devices: list[str]
    tokenizer: object      # None on a re-run (OUT has results): loaded when a row needs work


def check_model_files(load: LoadOptions, source: SourceOptions, base, adapter) -> None:
    """Base, adapter, LoRA files, VAE and image encoder usable, and their widths in agreement
    (`source`: the face backend whose embedding the adapter takes)."""
    # deferred: diffusers (config classes); the options are checked before any model library loads
    from ..model.parts import adapter_widths, check_widths, image_encoder_width, unet_config_of

    unet = unet_config_of(base, load.base_config)
    widths = adapter_widths(adapter)
    if load.adapter_lora is not None and not Path(load.adapter_lora).is_file():
        raise UsageError(f"--adapter-lora {load.adapter_lora}: no such file")
    if load.vae is not None:
        _check_vae(load.vae)
    encoder = load.image_encoder or f"{load.base_config or base}/image_encoder"
    check_widths(adapter, widths,
                 face=(source.face_backend, embedding_width(source.face_backend, source.face_models)),
                 clip=(encoder, image_encoder_width(base, load.base_config, load.image_encoder)),
                 cross=(base, int(unet.get("cross_attention_dim", 0))))


def check_devices(load: LoadOptions, devices: list[str]) -> None:
    # fp32 on the CPU has nothing to probe: torch need not load for it (a finished job's re-run)
    if not (all(device_type(d) == "cpu" for d in devices) and {load.precision, load.vae_precision} <= {"auto", "fp32"}):
        from ..model.load import resolve_dtype  # deferred: imports torch

        for device in dict.fromkeys(devices):  # a precision a device cannot run: a usage error, not N failed workers
            resolve_dtype(load.precision, device)
            if load.vae_precision != "auto":
                resolve_dtype(load.vae_precision, device)
    if load.offload and any(d == "cpu" for d in devices):
        raise UsageError(f"--offload moves models between CPU and an accelerator; it needs a cuda, xpu or mps "
                         f"device, not {','.join(devices)}")


def check_renderer(source: SourceOptions, shading: bool) -> None:
    if not shading:
        return
    try:
        resolve_backend(source.renderer)
    except (RuntimeError, ValueError) as exc:  # pytorch3d asked for and not installed
        raise UsageError(f"--renderer {source.renderer}: {first_line(exc)}") from None
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


def check_generate(cfg: GenerateConfig, log=None) -> CheckedRun:
    """Every option and every file or name it points at, checked before anything is
    written: UsageError on the first problem. `cfg` itself is not changed. `log`: where a warning
    line goes (the CLI prints it; None: dropped)."""
    cfg = _resolved(cfg)
    if cfg.load.lora is not None:
        _check_lora(cfg.load, log)
    # absolute, so results.parquet names each reference in a way that holds from any folder
    # (`fmu score OUT` run elsewhere, resume from another working directory)
    cfg = cfg.with_options(manifest=Path(cfg.manifest).absolute())
    manifest = read_manifest(cfg.manifest)
    devices = parse_devices(cfg.engine.device)
    check_devices(cfg.load, devices)
    # a bad --engine (or ray without Ray): one usage error before anything runs
    engine = cfg.engine
    pick_engine(engine.engine, devices, Ranks.from_env().world, engine.ray_address, engine.ray_cpus)
    if cfg.output.writer not in WRITERS:
        raise UsageError(f"--writer {cfg.output.writer!r}: use one of {', '.join(WRITERS)}")
    if cfg.output.shard_size < 1:
        raise UsageError(f"--shard-size {cfg.output.shard_size}: must be >= 1")
    check_renderer(cfg.source, cfg.load.shading)
    model_spec = resolve_model(cfg.load.preset, cfg.load.base_model, cfg.load.adapter)
    check_model_files(cfg.load, cfg.source, model_spec.base, model_spec.adapter)
    source = cfg.load.base_config or model_spec.base
    if has_records(Path(cfg.out)):  # a re-run: the tokenizer (transformers) loads only if a row needs work
        tokenizer_subfolder(source)
        tokenizer = None
    else:
        tokenizer = load_tokenizer(source)
    return CheckedRun(cfg=cfg, manifest=manifest, model_spec=model_spec, devices=devices, tokenizer=tokenizer)


def has_records(out: Path) -> bool:
    """Does OUT hold results of an earlier run (what a re-run may find finished)?"""
    store = ResultStore(out)
    return store.final.is_file() or (store.shards.is_dir() and any(store.shards.glob("*.parquet")))


def _resolved(cfg: GenerateConfig) -> GenerateConfig:
    """A checked copy of `cfg` with what the user left open decided; `cfg` itself is not changed.
    Run-wide values get the checks the manifest's per-row values get (a bad one would fail
    every row, or slip into the results unnoticed)."""
    source, load, sampling = cfg.source, cfg.load, cfg.sampling
    frame = parse_frame(source.frame)
    if not (math.isfinite(source.frame_scale) and source.frame_scale > 0):
        raise UsageError(f"--frame-scale {source.frame_scale}: must be > 0")
    if source.renderer not in BACKENDS:
        raise UsageError(f"--renderer {source.renderer!r}: use one of {', '.join(BACKENDS)}")
    _check_sampling(sampling)
    for name in ("lora_scale", "speed_lora_scale"):
        if not math.isfinite(getattr(load, name)):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number")
    if load.vae_decoder is not None:
        from ..model.few_step import parse_decoder  # deferred: imports torch; option errors come first, fast

        parse_decoder(load.vae_decoder)
    _check_gate(cfg.gate)
    cfg = _with_weights(cfg)
    backend = cfg.source.face_backend or ("dlib" if load.preset and not load.base_model else "insightface")
    return cfg.with_options(frame=frame, face_backend=backend)


def _check_sampling(sampling: SamplingOptions) -> None:
    """The run-wide image settings: within the bounds a manifest row's own values must keep."""
    values = {"seed": sampling.seed, "steps": sampling.steps, "guidance_scale": sampling.guidance_scale,
              "id_scale": sampling.id_scale}
    for name, value in values.items():
        lo, hi = BOUNDS[name]
        if value is not None and not (math.isfinite(value) and lo <= value <= hi):
            raise UsageError(f"--{name.replace('_', '-')} {value}: must be within [{lo}, {hi}]")
    for name in ("s_scale", "shading_scale"):
        if not math.isfinite(getattr(sampling, name)):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number")
    if sampling.eta is not None and not (0.0 <= sampling.eta <= 1.0):
        raise UsageError(f"--eta {sampling.eta}: must be within [0, 1]")


def _check_gate(gate: Gate) -> None:
    for name in ("min_id_sim", "max_pose_err", "max_light_err"):
        value = getattr(gate, name)
        if value is not None and not math.isfinite(value):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number")
    if gate.max_tries < 1:
        raise UsageError(f"--max-tries {gate.max_tries}: must be >= 1")
    if not gate.active and (gate.max_tries > 1 or gate.keep_rejected):
        raise UsageError("--max-tries and --keep-rejected need a threshold: --min-id-sim, --max-pose-err or "
                         "--max-light-err")


def _check_lora(load: LoadOptions, log) -> None:
    """--lora is read here: a bad file, or a LoRA trained on another adapter, is one usage error
    before anything runs, not a failed worker or silently different images."""
    adapter = resolve_model(load.preset, load.base_model, load.adapter).adapter
    warning = check_lora_adapter(Path(load.lora), adapter, force=load.force_lora)
    if warning and log is not None:
        log(warning)


def _with_weights(cfg: GenerateConfig) -> GenerateConfig:
    """--weights DIR: the pulled files fill every model option the user left open (an explicit flag
    wins); insightface's pack is needed only when insightface analyses the faces. The roles are
    flat option names (weights/layout.py): `face_models` is a source option, the rest load options."""
    if cfg.load.weights is None:
        return cfg
    flat = cfg.flat()
    need = [r for r in ROLES if flat[r] is None]
    if cfg.source.face_backend == "dlib" and "face_models" in need:
        need.remove("face_models")
    if "adapter" not in need and "adapter_lora" in need:  # a LoRA belongs to the adapter it came with
        need.remove("adapter_lora")
    found = generate_options(cfg.load.weights, need)
    filled = {role: (str(path) if role in ("base_model", "vae", "image_encoder") else path)
              for role, path in found.items() if role in need}
    return cfg.with_options(**filled, face_backend=cfg.source.face_backend or "insightface")
