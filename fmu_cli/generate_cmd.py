"""`fmu generate` and `fmu validate`."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fmu.core.errors import Interrupted
from fmu.core.out_lock import lock_first
from fmu.core.runner.config import DEFAULTS as D
from fmu.core.runner.config import (
    EngineOptions,
    GenerateConfig,
    LoadOptions,
    OutputOptions,
    SamplingOptions,
    SourceOptions,
)
from fmu.core.runner.gating import Gate

from . import panels as P
from .choices import Engine, FaceBackend, FaceCrop, Frame, MultiFace, Precision, Renderer, Scheduler, chosen
from .console import PROGRESS_INTERVAL, console, err, error, progress_bar, shown
from .engine_options import RayAddressOpt, RayCpusOpt

# the options of `fmu generate`, Annotated so that the command itself reads as a few lines of
# names and defaults (the defaults: core/runner/config.py)
ManifestOpt = Annotated[Path, typer.Argument(help="CSV or Parquet manifest (see manifests/README.md).")]
PresetOpt = Annotated[str | None, typer.Option(
    help="Built-in model preset (offline toy models).", rich_help_panel=P.MODELS)]
WeightsOpt = Annotated[Path | None, typer.Option(
    help="A folder filled by `fmu weights pull`: its files fill every model option left open (an explicit flag"
         " wins).", rich_help_panel=P.MODELS)]
BaseModelOpt = Annotated[str | None, typer.Option(
    help="SD1.5 diffusers folder or hub id (overrides --preset).", rich_help_panel=P.MODELS)]
AdapterOpt = Annotated[Path | None, typer.Option(
    help="fmu adapter checkpoint (.safetensors).", rich_help_panel=P.MODELS)]
ImageEncoderOpt = Annotated[str | None, typer.Option(
    help="CLIP ViT-H/14 image encoder folder.", rich_help_panel=P.MODELS)]
LoraOpt = Annotated[Path | None, typer.Option(
    help="LoRA written by `fmu finetune`, applied on top.", rich_help_panel=P.MODELS)]
LoraScaleOpt = Annotated[float, typer.Option(help="Weight of --lora.", rich_help_panel=P.MODELS)]
ForceLoraOpt = Annotated[bool, typer.Option(
    "--force-lora", help="Apply --lora even when it was trained on another adapter (it records the adapter's sha256).",
    rich_help_panel=P.MODELS)]
AdapterLoraOpt = Annotated[Path | None, typer.Option(
    help="Separate LoRA file of an h94 FaceID-PlusV2 --adapter.", rich_help_panel=P.MODELS)]
VaeOpt = Annotated[str | None, typer.Option(
    help="VAE override, e.g. a sd-vae-ft-mse folder.", rich_help_panel=P.MODELS)]
BaseConfigOpt = Annotated[str | None, typer.Option(
    help="Diffusers folder/hub id giving the configs of a single-file --base-model.", rich_help_panel=P.MODELS)]
FaceBackendOpt = Annotated[FaceBackend | None, typer.Option(
    help="Face analysis (default: dlib for the tiny preset, else insightface).", rich_help_panel=P.FACES)]
FaceModelsOpt = Annotated[Path | None, typer.Option(
    help="insightface models folder (buffalo_l layout).", rich_help_panel=P.FACES)]
MultiFaceOpt = Annotated[MultiFace, typer.Option(
    help="Which face of a photo with several is used: the detector's most confident (best, the authors' "
         "choice), the biggest (largest), or none (error: the row fails).", rich_help_panel=P.FACES)]
FaceCropOpt = Annotated[FaceCrop | None, typer.Option(
    help="The face image the CLIP encoder sees; default: the style the adapter was trained with (wide for the "
         "authors' checkpoint, aligned for h94's and fmu's).", rich_help_panel=P.FACES)]
FrameOpt = Annotated[Frame, typer.Option(
    help="The photo region an image shows. face (the authors' demo): a square around the shading source's "
         "face, FRAME-SCALE times its landmark box; centre: the photo's centre square.", rich_help_panel=P.FACES)]
FrameScaleOpt = Annotated[float, typer.Option(
    help="Side of the face frame / side of the face's landmark box.", rich_help_panel=P.FACES)]
RendererOpt = Annotated[Renderer, typer.Option(
    help="Shading renderer (auto: pytorch3d when installed, else cpu).", rich_help_panel=P.FACES)]
StepsOpt = Annotated[int, typer.Option(
    help="Denoising steps (a manifest row may override).", min=1, rich_help_panel=P.SAMPLING)]
SeedOpt = Annotated[int, typer.Option(
    help="Base seed for rows without one (row seed = base + row number).", rich_help_panel=P.SAMPLING)]
GuidanceScaleOpt = Annotated[float, typer.Option(help="Classifier-free guidance.", rich_help_panel=P.SAMPLING)]
IdScaleOpt = Annotated[float, typer.Option(
    help="Identity-channel strength (0 turns it off).", rich_help_panel=P.SAMPLING)]
SScaleOpt = Annotated[float, typer.Option(help="FaceID-PlusV2 shortcut weight.", rich_help_panel=P.SAMPLING)]
ShadingScaleOpt = Annotated[float, typer.Option(
    help="ShadingNet (3D channel) conditioning scale.", rich_help_panel=P.SAMPLING)]
NoShadingOpt = Annotated[bool, typer.Option(
    "--no-shading", help="Run the identity channel alone.", rich_help_panel=P.SAMPLING)]
SchedulerOpt = Annotated[Scheduler, typer.Option(
    help="Sampler (ddim: the authors'; lcm / tcd / ddim-trailing: for a --speed-lora).", rich_help_panel=P.SAMPLING)]
EtaOpt = Annotated[float | None, typer.Option(
    help="Noise of each DDIM / TCD step, 0..1 (default: DDIM 0, TCD 0.3).", rich_help_panel=P.SAMPLING)]
DevicesOpt = Annotated[str, typer.Option(
    "--devices", help="auto | cpu | cuda | cuda:N | mps | xpu | xpu:N | a list such as cuda:0,cuda:1 (one "
                      "worker process per entry; cpu,cpu works too). auto: every GPU torch reports (cuda, else xpu, "
                      "else mps), else the CPU.", rich_help_panel=P.DEVICES)]
EngineOpt = Annotated[Engine | None, typer.Option(
    help="inline | processes | torchrun | ray (default: inline for one device, processes for several, torchrun "
         'under a launcher). ray: the units on a Ray cluster\'s actors (pip install "fmu[ray]").',
    rich_help_panel=P.DEVICES)]
# max: 100000 threads ran the process out of threads (a traceback), not a usage error
ThreadsOpt = Annotated[int | None, typer.Option(
    help="torch CPU threads per worker; pin it for bit-identical images across 1 or N processes.",
    min=1, max=256, rich_help_panel=P.DEVICES)]
PrecisionOpt = Annotated[Precision, typer.Option(
    help="Weight precision (auto: fp16 on a GPU, fp32 on CPU; bf16 and fp16 run on CPU too).",
    rich_help_panel=P.DEVICES)]
VaePrecisionOpt = Annotated[Precision, typer.Option(
    help="The VAE's precision (auto: as --precision; fp32 keeps a VAE that overflows in fp16 in full "
         "precision).", rich_help_panel=P.DEVICES)]
BatchSizeOpt = Annotated[int, typer.Option(help="Images denoised together.", min=1, rich_help_panel=P.SPEED)]
VaeSlicingOpt = Annotated[bool, typer.Option(
    help="Decode the batch one image at a time (less memory).", rich_help_panel=P.SPEED)]
VaeTilingOpt = Annotated[bool, typer.Option(help="Decode in tiles (large images).", rich_help_panel=P.SPEED)]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the UNet and ShadingNet.", rich_help_panel=P.SPEED)]
OffloadOpt = Annotated[bool, typer.Option(
    "--offload", help="diffusers model CPU offload (GPU devices only).", rich_help_panel=P.SPEED)]
SpeedLoraOpt = Annotated[str | None, typer.Option(
    help="A few-step LoRA (LCM-LoRA, TCD-LoRA, Hyper-SD; diffusers or kohya format): file, folder or cached "
         "hub id. Use with --scheduler lcm|tcd and few --steps.", rich_help_panel=P.SPEED)]
SpeedLoraScaleOpt = Annotated[float, typer.Option(
    help="Weight of --speed-lora (kept when the identity channel is off).", rich_help_panel=P.SPEED)]
VaeDecoderOpt = Annotated[str | None, typer.Option(
    help="tiny:<folder or hub id>: decode with an AutoencoderTiny (TAESD) instead of the VAE (fast, a little "
         "softer).", rich_help_panel=P.SPEED)]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.", rich_help_panel=P.OUTPUT)]
SaveConditionsOpt = Annotated[bool, typer.Option(help="Write each shading condition image.", rich_help_panel=P.OUTPUT)]
CacheDirOpt = Annotated[Path | None, typer.Option(
    help="Face/shading cache (default OUT/.cache).", rich_help_panel=P.OUTPUT)]
MinIdSimOpt = Annotated[float | None, typer.Option(
    help="Quality gate: an image whose identity similarity is below this is made again with the next seed (no "
         "face counts as 0).", rich_help_panel=P.GATING)]
MaxPoseErrOpt = Annotated[float | None, typer.Option(
    help="Quality gate: the most pose error (degrees) against the 3D condition.", rich_help_panel=P.GATING)]
MaxLightErrOpt = Annotated[float | None, typer.Option(
    help="Quality gate: the most lighting error against the 3D condition.", rich_help_panel=P.GATING)]
MaxTriesOpt = Annotated[int, typer.Option(
    min=1, help="Attempts per image under a quality gate; the best is kept either way (results: attempts, "
                "attempt_seeds, accepted).", rich_help_panel=P.GATING)]
KeepRejectedOpt = Annotated[bool, typer.Option(
    "--keep-rejected", help="Also write the attempts not kept, under OUT/rejected/.", rich_help_panel=P.GATING)]
WriterOpt = Annotated[str, typer.Option(
    help="The output stage: files = OUT/images/<id>_<k>.png (prompt, seed, reference and settings in PNG text "
         "chunks); webdataset = OUT/shards/*.tar (KEY.png, KEY.json record, KEY.txt prompt); hf = OUT/dataset, a "
         "Hugging Face imagefolder (metadata.jsonl).", rich_help_panel=P.OUTPUT)]
ShardSizeOpt = Annotated[int, typer.Option(
    min=1, help="Samples per .tar shard (--writer webdataset).", rich_help_panel=P.OUTPUT)]
ProgressIntervalOpt = Annotated[float, typer.Option(
    min=0.01, help="Seconds between plain progress lines when stdout is not a terminal (a log file).",
    rich_help_panel=P.OUTPUT)]


def generate(
    manifest: ManifestOpt, preset: PresetOpt = D.preset, weights: WeightsOpt = D.weights,
    base_model: BaseModelOpt = D.base_model, adapter: AdapterOpt = D.adapter,
    image_encoder: ImageEncoderOpt = D.image_encoder, lora: LoraOpt = D.lora, lora_scale: LoraScaleOpt = D.lora_scale,
    force_lora: ForceLoraOpt = D.force_lora, adapter_lora: AdapterLoraOpt = D.adapter_lora, vae: VaeOpt = D.vae,
    base_config: BaseConfigOpt = D.base_config, face_backend: FaceBackendOpt = D.face_backend,
    face_models: FaceModelsOpt = D.face_models, multi_face: MultiFaceOpt = D.multi_face,
    face_crop: FaceCropOpt = D.face_crop, frame: FrameOpt = D.frame, frame_scale: FrameScaleOpt = D.frame_scale,
    renderer: RendererOpt = D.renderer, steps: StepsOpt = D.steps, seed: SeedOpt = D.seed,
    guidance_scale: GuidanceScaleOpt = D.guidance_scale, id_scale: IdScaleOpt = D.id_scale,
    s_scale: SScaleOpt = D.s_scale, shading_scale: ShadingScaleOpt = D.shading_scale,
    no_shading: NoShadingOpt = not D.shading, scheduler: SchedulerOpt = D.scheduler, eta: EtaOpt = D.eta,
    devices: DevicesOpt = D.device, engine: EngineOpt = D.engine, ray_address: RayAddressOpt = D.ray_address,
    ray_cpus: RayCpusOpt = D.ray_cpus, threads: ThreadsOpt = D.threads, precision: PrecisionOpt = D.precision,
    vae_precision: VaePrecisionOpt = D.vae_precision, batch_size: BatchSizeOpt = D.batch_size,
    vae_slicing: VaeSlicingOpt = D.vae_slicing, vae_tiling: VaeTilingOpt = D.vae_tiling,
    compile: CompileOpt = D.compile, offload: OffloadOpt = D.offload, speed_lora: SpeedLoraOpt = D.speed_lora,
    speed_lora_scale: SpeedLoraScaleOpt = D.speed_lora_scale, vae_decoder: VaeDecoderOpt = D.vae_decoder,
    min_id_sim: MinIdSimOpt = D.min_id_sim, max_pose_err: MaxPoseErrOpt = D.max_pose_err,
    max_light_err: MaxLightErrOpt = D.max_light_err, max_tries: MaxTriesOpt = D.max_tries,
    keep_rejected: KeepRejectedOpt = D.keep_rejected, out: OutOpt = D.out, writer: WriterOpt = D.writer,
    shard_size: ShardSizeOpt = D.shard_size, save_conditions: SaveConditionsOpt = D.save_conditions,
    cache_dir: CacheDirOpt = D.cache_dir, progress_interval: ProgressIntervalOpt = PROGRESS_INTERVAL,
) -> None:
    """Turn a manifest of reference photos and prompts into images and results.parquet.

    Example:  fmu generate manifests/examples/basic.csv --out runs/a --steps 30
    Re-running the same command skips finished images and retries failed ones.
    Exit code: 0 all rows ok, 1 some rows failed, 2 usage error; 130 / 143 stopped by Ctrl-C /
    SIGTERM (finished images are kept and recorded; re-run to finish).
    """
    cfg = run_config(**{name: value for name, value in locals().items() if name != "progress_interval"})
    # deferred: heavy (torch); keeps the CLI start fast
    from fmu.core.runner.generate import run_generate
    from fmu.core.runner.preflight import check_generate

    def warn(line: str) -> None:
        err.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)

    with lock_first(out, "generate"):  # a second run on OUT is refused at once, not after the preflight
        checked = check_generate(cfg, log=warn)  # every option, before anything is written or the bar is drawn
        try:
            with progress_bar(interval=progress_interval) as progress, stop_on_sigterm():
                summary = run_generate(cfg, progress=progress, checked=checked)
        except OSError as exc:  # disk full, permissions: finished rows are kept, re-running resumes
            error(f"{exc}; finished images and results are kept: re-run the same command to resume")
            raise typer.Exit(1) from None
    if summary.interrupted:
        err.print(f"[yellow]interrupted[/] ({signal.Signals(summary.interrupted).name}): {summary.ok} ok, "
                  f"{summary.failed} failed so far -> {out}/results.parquet; re-run the same command to "
                  "finish the rest")
        raise typer.Exit(summary.exit_code)
    done_before = f", {summary.skipped} of them finished earlier and kept" if summary.skipped else ""
    console.print(f"{summary.ok} ok, {summary.failed} failed{done_before} "
                  f"({summary.analyses} face analyses, {summary.seconds:.1f}s) -> {out}/results.parquet")
    if summary.failed:
        import polars as pl  # deferred: heavy (polars); keeps the CLI start fast

        failed = pl.read_parquet(out / "results.parquet").filter(pl.col("status") == "failed")
        table = Table("id", "k", "reason", title="failed rows")
        for rid, k, reason in failed.select("id", "k", "error").head(20).iter_rows():
            table.add_row(shown(rid), str(k), shown(reason))
        console.print(table)
    raise typer.Exit(summary.exit_code)


def run_config(manifest: Path, out: Path, **flag) -> GenerateConfig:
    """The run's option groups from the command's flags (by the flags' names: `devices`,
    `no_shading`; a closed choice turned into its plain value)."""
    f = SimpleNamespace(**flag)
    return GenerateConfig(
        manifest=manifest, out=out,
        source=SourceOptions(face_backend=chosen(f.face_backend), face_models=f.face_models,
                             multi_face=chosen(f.multi_face), face_crop=chosen(f.face_crop), frame=chosen(f.frame),
                             frame_scale=f.frame_scale, renderer=chosen(f.renderer), cache_dir=f.cache_dir),
        load=LoadOptions(preset=f.preset, base_model=f.base_model, weights=f.weights, adapter=f.adapter,
                         image_encoder=f.image_encoder, adapter_lora=f.adapter_lora, lora=f.lora,
                         lora_scale=f.lora_scale, force_lora=f.force_lora, vae=f.vae, base_config=f.base_config,
                         precision=chosen(f.precision), vae_precision=chosen(f.vae_precision), speed_lora=f.speed_lora,
                         speed_lora_scale=f.speed_lora_scale, vae_decoder=f.vae_decoder, scheduler=chosen(f.scheduler),
                         vae_slicing=f.vae_slicing, vae_tiling=f.vae_tiling, compile=f.compile, offload=f.offload,
                         shading=not f.no_shading),
        sampling=SamplingOptions(seed=f.seed, steps=f.steps, guidance_scale=f.guidance_scale, id_scale=f.id_scale,
                                 s_scale=f.s_scale, shading_scale=f.shading_scale, eta=f.eta),
        output=OutputOptions(writer=f.writer, shard_size=f.shard_size, save_conditions=f.save_conditions),
        engine=EngineOptions(device=f.devices.strip(), engine=chosen(f.engine), ray_address=f.ray_address,
                             ray_cpus=f.ray_cpus, threads=f.threads, batch_size=f.batch_size),
        gate=Gate(min_id_sim=f.min_id_sim, max_pose_err=f.max_pose_err, max_light_err=f.max_light_err,
                  max_tries=f.max_tries, keep_rejected=f.keep_rejected))


@contextmanager
def stop_on_sigterm():
    """SIGTERM (a scheduler's stop, `kill`) ends the run like Ctrl-C does: finished images are
    merged into results.parquet and run.json is written before exiting."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


PROBLEMS_PER_ROW = 5   # printed; every problem still counts


def validate_manifest(
    manifest: Path = typer.Argument(..., help="CSV or Parquet manifest."),
    tokenizer: str | None = typer.Option(None, help="Tokenizer folder for the prompt-length check "
                                         "(default: the tiny preset's).", rich_help_panel=P.MODELS),
) -> None:
    """List every problem of every row; exit 1 when any row is unusable.

    Example:  fmu validate manifests/examples/basic.csv
    """
    from fmu.core.manifest import ERROR, read_manifest, validate  # deferred: heavy (polars); keeps the CLI start fast

    df = read_manifest(manifest)
    tok = _tokenizer(tokenizer)
    result = validate(df, manifest.parent, count_tokens=lambda s: len(tok(s).input_ids),
                      token_limit=tok.model_max_length)
    if result.problems:
        table = Table("row", "id", "column", "level", "problem", title=f"{manifest}")
        per_row: dict[int, int] = {}
        totals = Counter(p.row for p in result.problems)
        for p in result.problems:
            per_row[p.row] = per_row.get(p.row, 0) + 1
            if per_row[p.row] <= PROBLEMS_PER_ROW:
                style = "red" if p.level == ERROR else "yellow"
                table.add_row(str(p.row), shown(p.id), shown(p.column), f"[{style}]{p.level}[/]", shown(p.reason))
            elif per_row[p.row] == PROBLEMS_PER_ROW + 1:
                table.add_row(str(p.row), shown(p.id), "", "",
                              f"… and {totals[p.row] - PROBLEMS_PER_ROW} more problems in this row")
        console.print(table)
    bad = len(result.errors_by_row())
    console.print(f"{result.total} rows: {result.total - bad} usable, {bad} unusable, "
                  f"{sum(p.level != ERROR for p in result.problems)} warnings")
    raise typer.Exit(1 if bad else 0)


def _tokenizer(path: str | None):
    from fmu.core.runner.preflight import (
        load_tokenizer,  # deferred: heavy (torch, transformers); keeps the CLI start fast
    )

    if path is None:
        from fmu.core.model.presets import ensure_preset  # deferred: heavy (torch)

        base, _ = ensure_preset("tiny")
        return load_tokenizer(base)
    return load_tokenizer(path, "--tokenizer")
