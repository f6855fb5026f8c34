"""`fmu prepare`, `fmu train`, `fmu finetune` (plain functions, registered as Typer commands)."""

from __future__ import annotations

import shlex
import signal
import sys
from dataclasses import replace
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fmu.core.errors import UsageError, first_line
from fmu.core.out_lock import lock_first
from fmu.training import finetune as finetuning
from fmu.training.config import FINETUNE_DEFAULTS, NEAR_DUPLICATE_COSINE, load_config, prepared_manifest_path
from fmu.training.config import TrainConfig as T

from . import panels as P
from .choices import (
    FaceBackend,
    FaceCrop,
    MaskMode,
    MixedPrecision,
    PrepareDedupe,
    PrepareMultiFace,
    Renderer,
    chosen,
)
from .console import PROGRESS_INTERVAL, console, err, error, progress_bar, shown
from .engine_options import MergingEngineOpt, RayAddressOpt, RayCpusOpt


def prepare(
    source: Path = typer.Argument(..., help="A folder of images (captions from name.txt) or a training "
                                  "manifest (CSV/Parquet: image, caption, masks; see manifests/training.md)."),
    out: Path = typer.Option(..., "--out", "-o", help="Data folder: train.parquet, report.parquet, cache/.",
                             rich_help_panel=P.OUTPUT),
    face_backend: FaceBackend = typer.Option("dlib", help="dlib (the tiny preset's, 128-d) or insightface "
                                             "(ArcFace 512-d).", rich_help_panel=P.FACES),
    face_models: Path | None = typer.Option(None, help="insightface models folder (buffalo_l layout).",
                                            rich_help_panel=P.FACES),
    multi_face: PrepareMultiFace = typer.Option("largest", help="A photo with several faces: use the biggest "
                                                "(largest, outlined in preview.html) or leave the photo out (skip).",
                                                rich_help_panel=P.FACES),
    dedupe: PrepareDedupe = typer.Option("near", help="Keep each photo once: near (same bytes, or a face "
                                         f"embedding cosine above {NEAR_DUPLICATE_COSINE} in the same folder), "
                                         "exact (same bytes only; keeps mirrored or edited variants), off.",
                                         rich_help_panel=P.DATA),
    resolution: int = typer.Option(512, min=16, help="Side of the cached shading conditions.", rich_help_panel=P.DATA),
    renderer: Renderer = typer.Option("auto", help="Shading renderer (auto: pytorch3d when installed, else cpu).",
                                      rich_help_panel=P.FACES),
    workers: int = typer.Option(1, min=1, help="Worker processes or Ray actors (each loads its own face models).",
                                rich_help_panel=P.SPEED),
    engine: MergingEngineOpt = None,
    ray_address: RayAddressOpt = None,
    ray_cpus: RayCpusOpt = 1.0,
    masks: MaskMode = typer.Option("auto", help="auto: mask the caption's region phrases with --parser (a given "
                              "mask wins for its phrase) | given: only the manifest's masks.", rich_help_panel=P.DATA),
    parser: str = typer.Option("mesh", help="Face parser for auto masks: mesh (offline, mediapipe landmarks) | "
                               "segformer:<folder or hub id> (a SegFormer face-parsing model).",
                               rich_help_panel=P.DATA),
    captioner: str | None = typer.Option(None, help="Image-to-text model (folder or hub id) that captions "
                                            "rows without a caption (manifest / name.txt captions win).",
                                            rich_help_panel=P.DATA),
) -> None:
    """Analyse faces, render shading and mask the caption's face regions; write DATA/train.parquet.

    Example:  fmu prepare my_photos/ --out data/ --resolution 64
    Rows without a usable face (or unreadable images) are listed in DATA/report.parquet
    and left out; it also lists each row's phrases and why a phrase has no mask. DATA/preview.html
    shows the masks. Re-running resumes: analyses, captions and masks are cached by image content.
    Exit code: 0 all rows usable, 1 some rows excluded, 2 usage error.
    """
    if not source.exists():  # answered before the heavy libraries load
        raise UsageError(f"{source}: no such folder of images or training manifest")
    # deferred: heavy (polars, face models); keeps the CLI start fast
    from fmu.training.prepare import PrepareConfig, run_prepare

    cfg = PrepareConfig(source=source, out=out, face_backend=chosen(face_backend), face_models=face_models,
                        resolution=resolution, renderer=chosen(renderer), workers=workers, masks=chosen(masks),
                        parser=parser, captioner=captioner, multi_face=chosen(multi_face),
                        dedupe=chosen(dedupe), engine=chosen(engine), ray_address=ray_address, ray_cpus=ray_cpus)
    with progress_bar() as progress:
        summary = run_prepare(cfg, progress=progress)
    console.print(f"{summary.ok} usable, {summary.failed} excluded ({summary.seconds:.1f}s) -> {summary.manifest}")
    if summary.phrases:
        console.print(f"{summary.phrases_masked} of {summary.phrases} caption phrases masked "
                      f"(the others' reasons: report.parquet) -> {summary.manifest.parent / 'preview.html'}")
    if summary.failed:
        import polars as pl  # deferred: heavy (polars); keeps the CLI start fast

        failed = pl.read_parquet(summary.report).filter(pl.col("status") != "ok")
        table = Table("id", "image", "reason", title="excluded images")
        for rid, image, reason in failed.select("id", "image", "reason").head(30).iter_rows():
            table.add_row(shown(rid), shown(image), shown(reason))
        console.print(table)
    raise typer.Exit(1 if summary.failed else 0)


def _run(overrides: dict, config: Path | None, defaults: dict | None = None, interval: float | None = None) -> None:
    _run_config(load_config(config, overrides, defaults), interval)


def _run_config(cfg, interval: float | None = None) -> None:
    prepared_manifest_path(cfg.data)  # a missing --data answers at once, before the model libraries load
    # OUT is locked before anything heavy is imported or read (checkpoint, model configs): a second
    # run on the same folder is refused at once
    with lock_first(cfg.out, "finetune" if cfg.mode == "lora" else "train"):
        from fmu.training.trainer import run_training  # deferred: heavy (torch, diffusers); keeps the CLI start fast

        try:
            with progress_bar(interval=interval) as progress:
                summary = run_training(cfg, progress=progress, log=console.print)
        except OSError as exc:  # a full disk writing a checkpoint or the weights: one line (the cause), exit 1
            error(first_line(exc, None))
            raise typer.Exit(1) from None
    last = summary.losses[-1] if summary.losses else {}
    if summary.interrupted:
        saved = f"checkpoint {summary.checkpoint}" if summary.checkpoint else "no checkpoint (no step finished)"
        weights = f" and {summary.weights}" if summary.weights else ""
        err.print(f"[yellow]interrupted[/] ({signal.Signals(summary.interrupted).name}) at step {summary.steps} of "
                  f"{cfg.max_steps}: saved {escape(saved)}{escape(weights)}; continue with: "
                  f"{escape(resume_command())}")
        raise typer.Exit(128 + summary.interrupted)
    if summary.weights is not None:
        console.print(f"{summary.steps} steps on {summary.world_size} process(es) in {summary.seconds:.1f}s, "
                      f"last loss {last.get('loss', float('nan')):.4f} -> {summary.weights}")


def resume_command() -> str:
    """The command this process was started with, plus `--resume latest` (once)."""
    args = list(sys.argv[1:])
    if "--resume" in args:
        i = args.index("--resume")
        del args[i:i + 2]
    args = [a for a in args if not a.startswith("--resume=")]
    return shlex.join(["fmu", *args, "--resume", "latest"])


def train(
    data: Path | None = typer.Option(None, "--data", help="Prepared manifest (DATA/train.parquet) or its folder.",
                                     rich_help_panel=P.DATA),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder (checkpoints, logs, adapter).",
                                    rich_help_panel=P.OUTPUT),
    config: Path | None = typer.Option(None, "--config", help="TOML file with training settings.",
                                       rich_help_panel=P.TRAINING),
    preset: str | None = typer.Option(None, help="Model preset (default tiny: offline toy models).",
                                      rich_help_panel=P.MODELS),
    base_model: str | None = typer.Option(None, help="SD1.5 diffusers folder (overrides --preset).",
                                          rich_help_panel=P.MODELS),
    init_adapter: Path | None = typer.Option(None, help="Start from this fmu adapter (default: the "
                                             "preset's; with --base-model: a fresh one).", rich_help_panel=P.MODELS),
    image_encoder: str | None = typer.Option(None, help="CLIP ViT-H/14 image encoder folder.",
                                             rich_help_panel=P.MODELS),
    id_model: Path | None = typer.Option(None, help="ArcFace ONNX for L_id (w600k_r50.onnx).",
                                         rich_help_panel=P.MODELS),
    resolution: int | None = typer.Option(None, help="Training resolution (default 512; tiny 64).",
                                          rich_help_panel=P.TRAINING),
    face_crop: FaceCrop | None = typer.Option(None, help="The face image the CLIP encoder is trained on "
                                              "(wide: the authors' crop); default: the --init-adapter's "
                                              "style, aligned for a fresh adapter. Recorded in the "
                                              "adapter, so generate follows it.", rich_help_panel=P.FACES),
    max_steps: int | None = typer.Option(None, help=f"Optimizer steps (default {T.max_steps}).",
                                         rich_help_panel=P.TRAINING),
    batch_size: int | None = typer.Option(None, help=f"Images per process per micro-batch (default {T.batch_size}).",
                                          rich_help_panel=P.TRAINING),
    grad_accum: int | None = typer.Option(None, help=f"Gradient accumulation micro-batches (default {T.grad_accum}).",
                                          rich_help_panel=P.TRAINING),
    lr: float | None = typer.Option(None, help=f"AdamW learning rate (default {T.lr:g}).", rich_help_panel=P.TRAINING),
    weight_decay: float | None = typer.Option(None, help=f"AdamW weight decay (default {T.weight_decay:g}).",
                                              rich_help_panel=P.TRAINING),
    lr_schedule: str | None = typer.Option(None, help="A diffusers scheduler: constant, linear, cosine, "
                                           f"constant_with_warmup ... (default {T.lr_schedule}).",
                                           rich_help_panel=P.TRAINING),
    warmup_steps: int | None = typer.Option(None, help=f"Learning-rate warm-up steps (default {T.warmup_steps}).",
                                            rich_help_panel=P.TRAINING),
    mixed_precision: MixedPrecision | None = typer.Option(None, help="Default: bf16 on GPU, no on CPU.",
                                                          rich_help_panel=P.DEVICES),
    lambda_map: float | None = typer.Option(None, help=f"L_map weight (default {T.lambda_map:g}).",
                                            rich_help_panel=P.TRAINING),
    lambda_id: float | None = typer.Option(None, help=f"L_id weight (default {T.lambda_id:g}; 0 turns it off).",
                                           rich_help_panel=P.TRAINING),
    id_t_min: int | None = typer.Option(None, help=f"L_id applies for timesteps >= this (default {T.id_t_min}).",
                                        rich_help_panel=P.TRAINING),
    id_t_max: int | None = typer.Option(None, help=f"... and <= this (default {T.id_t_max}).",
                                        rich_help_panel=P.TRAINING),
    image_drop: float | None = typer.Option(None, help=f"CLIP image drop rate (default {T.image_drop:g}).",
                                            rich_help_panel=P.TRAINING),
    caption_drop: float | None = typer.Option(None, help=f"Caption drop rate (default {T.caption_drop:g}).",
                                              rich_help_panel=P.TRAINING),
    checkpoint_every: int | None = typer.Option(None, help="Checkpoint every N steps (default: max-steps / 10, "
                                                "at most 20000; 0: only at the end). Ctrl-C / SIGTERM "
                                                "also save one.", rich_help_panel=P.OUTPUT),
    keep_checkpoints: int | None = typer.Option(None, help=f"Keep the last K checkpoints (default "
                                                f"{T.keep_checkpoints}).", rich_help_panel=P.OUTPUT),
    resume: str | None = typer.Option(None, help="'latest' or a checkpoint folder.", rich_help_panel=P.OUTPUT),
    validate_every: int | None = typer.Option(None, help="Validation images every N steps (0: off).",
                                              rich_help_panel=P.OUTPUT),
    seed: int | None = typer.Option(None, help=f"Random seed (default {T.seed}).", rich_help_panel=P.TRAINING),
    workers: int | None = typer.Option(None, help="DataLoader worker processes.", rich_help_panel=P.SPEED),
    progress_interval: float = typer.Option(PROGRESS_INTERVAL, min=0.01, help="Seconds between plain progress "
                                            "lines when stdout is not a terminal (a log file).",
                                            rich_help_panel=P.OUTPUT),
) -> None:
    """Train the identity channel (projection, IP attention, LoRA) and the ShadingNet.

    Example:  fmu train --data data/ --out runs/t --preset tiny --max-steps 30 --batch-size 2
    Several processes:  torchrun --nproc_per_node 2 -m fmu train --data data/ --out runs/t
    Continue a run:  the same command with --resume latest.
    Writes OUT/adapter.safetensors (use with `fmu generate --adapter`).
    """
    overrides = {k: v for k, v in locals().items() if k not in ("config", "progress_interval")}
    overrides.update(face_crop=chosen(face_crop), mixed_precision=chosen(mixed_precision))
    _run(overrides, config, interval=progress_interval)


def finetune(
    from_: Path = typer.Option(..., "--from", help="fmu adapter checkpoint to start from.", rich_help_panel=P.MODELS),
    data: Path = typer.Option(..., "--data", help="A small folder of images (prepared automatically) "
                              "or a prepared manifest / data folder.", rich_help_panel=P.DATA),
    out: Path = typer.Option(Path("runs/finetune"), "--out", "-o", help="Run folder; writes OUT/lora.safetensors.",
                             rich_help_panel=P.OUTPUT),
    config: Path | None = typer.Option(None, "--config", help="TOML file with training settings.",
                                       rich_help_panel=P.TRAINING),
    preset: str | None = typer.Option(None, help="Model preset (default tiny).", rich_help_panel=P.MODELS),
    base_model: str | None = typer.Option(None, help="SD1.5 diffusers folder (overrides --preset).",
                                          rich_help_panel=P.MODELS),
    rank: int | None = typer.Option(None, help=f"Rank of the new LoRA (default {FINETUNE_DEFAULTS['lora_rank']}).",
                                    rich_help_panel=P.TRAINING),
    face_backend: FaceBackend = typer.Option("dlib", help="Face analysis for automatic preparation.",
                                             rich_help_panel=P.FACES),
    id_model: Path | None = typer.Option(None, help="ArcFace ONNX for L_id.", rich_help_panel=P.MODELS),
    max_steps: int | None = typer.Option(None, help=f"Optimizer steps (default {FINETUNE_DEFAULTS['max_steps']}).",
                                         rich_help_panel=P.TRAINING),
    batch_size: int | None = typer.Option(None, help=f"Images per micro-batch (default "
                                          f"{FINETUNE_DEFAULTS['batch_size']}).", rich_help_panel=P.TRAINING),
    lr: float | None = typer.Option(None, help=f"Learning rate (default {T.lr:g}).", rich_help_panel=P.TRAINING),
    lambda_id: float | None = typer.Option(None, help="L_id weight.", rich_help_panel=P.TRAINING),
    checkpoint_every: int | None = typer.Option(None, help="Checkpoint every N steps (default: max-steps / 10; "
                                                "0: only at the end). Ctrl-C / SIGTERM also save one.",
                                                rich_help_panel=P.OUTPUT),
    resume: str | None = typer.Option(None, help="'latest' or a checkpoint folder.", rich_help_panel=P.OUTPUT),
    seed: int | None = typer.Option(None, rich_help_panel=P.TRAINING),
) -> None:
    """Finetune a NEW LoRA on top of an fmu adapter (everything else frozen).

    Example:  fmu finetune --from runs/t/adapter.safetensors --data my_faces/ --out runs/ft --rank 8
    Writes OUT/lora.safetensors (use with `fmu generate --lora`).
    """
    overrides = {"out": out, "mode": "lora", "init_adapter": from_, "preset": preset,
                 "base_model": base_model, "lora_rank": rank, "id_model": id_model,
                 "max_steps": max_steps, "batch_size": batch_size, "lr": lr, "lambda_id": lambda_id,
                 "checkpoint_every": checkpoint_every, "resume": resume, "seed": seed}
    # finetune's own defaults sit under the TOML file, which sits under the flags; all checked, and
    # the face backend against the adapter, before a folder of images is prepared
    cfg = load_config(config, overrides, FINETUNE_DEFAULTS)
    finetuning.check_sources(from_, data)  # before the model libraries load: a missing file answers at once
    with lock_first(out, "finetune"):  # held from before the preparation (into OUT/data) to the end
        if finetuning.needs_preparation(data):
            from fmu.training.preflight import check_finetune_backend  # deferred: heavy (torch, diffusers)

            check_finetune_backend(from_, chosen(face_backend))
        _run_config(replace(cfg, data=finetuning.prepared_manifest(data, out, chosen(face_backend))))
