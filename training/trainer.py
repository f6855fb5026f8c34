"""`fmu train` / `fmu finetune`: the training loop.

    loss = MSE(ε̂, ε) + λ_map · L_map + L_id          (L_id's weights carry λ_id and the t range)

The model is Face-MakeUpV2's: the UNet with the FaceID-PlusV2 identity channel (projection,
IP attention, LoRA) and the ShadingNet (a ControlNet fed the shading render, cross-attending to
the 4 ID tokens), built by trainable.py; one step's losses are objective.py's. accelerate
carries devices, processes (torchrun / accelerate launch), gradient accumulation, mixed precision
and checkpoint state; the data order is our own (`DataOrder`) so that a resume continues with
exactly the next batch.
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler

from fmu.core.devices import auto_devices, device_type
from fmu.core.errors import UsageError
from fmu.core.images import atomic_write_bytes, save_png
from fmu.core.model.pipeline import Request, Settings
from fmu.core.model.presets import TINY_SIZE
from fmu.core.model.tiny_onnx import write_tiny_arcface
from fmu.core.out_lock import locked_output, remove_stale_temp_files
from fmu.core.run_record import write_run_record
from fmu.core.tables import write_table

from . import checkpoint as ckpt
from .attention_capture import install_attention_capture, remove_attention_capture
from .config import TrainConfig, prepared_manifest_path
from .data import DataOrder, LoadingStopped, TrainingSet, collate, data_digest, read_training_manifest
from .id_encoder import IdEncoder
from .objective import Denoiser, Frozen, compute_losses
from .preflight import check_training
from .stopping import StoppedWaiting, StopRequest
from .trainable import build_model, save_trained_weights, select_trainable, weights_name

LOSSES_FILE = "losses.parquet"  # one row per logged step (generate's records are results.parquet)


@dataclass
class TrainSummary:
    steps: int
    world_size: int
    seconds: float
    weights: Path | None
    losses: list
    interrupted: int = 0             # the signal that stopped the run early (0: it ran to max_steps)
    checkpoint: Path | None = None   # the newest checkpoint: where `--resume latest` continues


class _Batches:
    """DataLoader batch sampler over `DataOrder` from a position on (endless)."""

    def __init__(self, order: DataOrder, start: int):
        self.order, self.start = order, start

    def __iter__(self):
        for _, batch in self.order.batches_from(self.start):
            yield batch


def _id_encoder(cfg: TrainConfig, out: Path, dim: int):
    if cfg.lambda_id <= 0:
        return None
    path = cfg.id_model
    if path is None:
        if not cfg.preset or cfg.base_model:
            raise UsageError("L_id needs a face-recognition ONNX: give --id-model (e.g. w600k_r50.onnx) "
                             "or --lambda-id 0")
        path = out / "tiny_arcface.onnx"   # the tiny preset's toy ArcFace (offline runs only)
        if not path.exists():
            write_tiny_arcface(path, seed=0, dim=dim)
    return IdEncoder.from_onnx(path)


def run_training(cfg: TrainConfig, progress=None, log=print) -> TrainSummary:
    """Train until `max_steps`, or until SIGINT / SIGTERM: then the step in hand is finished and
    saved (checkpoint, weights so far, losses.parquet, run.json "interrupted") and the summary
    says which signal stopped it (training/stopping.py)."""
    stop = StopRequest()
    with stop.listening(), ExitStack() as held:
        return _train(cfg, progress, log, stop, held)


def _make_accelerator(cfg: TrainConfig, out: Path) -> Accelerator:
    """accelerate on the accelerator torch reports (cuda, xpu, mps), else the CPU, in the run's
    mixed precision, logging to OUT/logs."""
    on_gpu = device_type(auto_devices()[0]) != "cpu"
    mixed_precision = cfg.resolved_mixed_precision(on_gpu)
    if mixed_precision == "fp16" and not on_gpu:
        # accelerate runs fp16 with a gradient scaler on accelerators only; on the CPU it would
        # silently train in fp32 with the frozen parts in fp16
        raise UsageError("--mixed-precision fp16 needs a GPU (accelerate has no fp16 autocast and gradient scaler "
                         "on the CPU); use bf16 on the CPU")
    return Accelerator(
        gradient_accumulation_steps=cfg.grad_accum, mixed_precision=mixed_precision,
        log_with="tensorboard", cpu=not on_gpu,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))


def _build(cfg: TrainConfig, accelerator, weight_dtype) -> tuple:
    """The model with its trainable parts chosen, then the attention capture (after IP-Adapter and
    LoRA), the optimizer and its schedule: (model, params, size, store, denoiser, optimizer, lr_scheduler)."""
    model = build_model(cfg, accelerator.device, weight_dtype)
    params = select_trainable(model, cfg.mode)
    size = cfg.resolution or (TINY_SIZE if cfg.preset and not cfg.base_model else 512)
    store = install_attention_capture(model.unet, map_size=size // 16, latent_size=size // 8)
    model.pipe.set_ip_adapter_scale(1.0)
    optimizer, lr_scheduler = _optimizer(cfg, params)
    denoiser, optimizer = accelerator.prepare(Denoiser(model, cfg), optimizer)  # the scheduler is stepped by us
    return model, params, size, store, denoiser, optimizer, lr_scheduler


def _next_batch(batches, dataset: TrainingSet, stop: StopRequest, world: int, workers: int) -> dict | None:
    """The next micro-batch, or None when a stop signal came while it was being built (a slow batch
    does not hold the signal): items loaded in this process are asked between each other; items
    DataLoader workers (--workers) load, in processes the signal does not reach, are left at once.
    One process only: several ranks must agree on where to stop (`_stop_signal`, at a step boundary)."""
    if world > 1:
        return next(batches)
    if workers:
        try:
            with stop.wait_for_data():
                return next(batches)
        except StoppedWaiting:
            return None
    dataset.stop_requested = lambda: bool(stop.signum)
    try:
        return next(batches)
    except LoadingStopped:
        return None
    finally:
        dataset.stop_requested = None


def _training_set(manifest: Path, model, size: int, log=print) -> TrainingSet:
    """The prepared rows, checked to fit the adapter (face embedding width); rows over the bounds
    (caption length, masks per image) are left out with one line each."""
    dataset = TrainingSet(manifest, model.pipe.tokenizer, size, face_crop=model.cfg.face_crop)
    for row_id, why in dataset.refused:
        log(f"row {row_id} left out: {why}")
    if len(dataset) == 0:
        raise UsageError(f"{manifest} has no usable rows")
    first = dataset[0]
    if first.id_embedding.shape[0] != model.cfg.id_embed_dim:
        raise UsageError(f"the data's face embeddings are {first.id_embedding.shape[0]}-d but the adapter "
                         f"expects {model.cfg.id_embed_dim}-d: prepare with the matching --face-backend")
    return dataset


def _resume(saved, resume_from, cfg: TrainConfig, out: Path, log, accelerator, **state) -> tuple[int, int]:
    """(step, position) to start from: a checkpoint's, applied to `state` (model, optimizer,
    lr_scheduler, generator), else (0, 0)."""
    if saved is not None:
        ckpt.apply_checkpoint(saved, mode=cfg.mode, scaler=accelerator.scaler, **state)
        log(f"resumed from {resume_from} at step {saved.step}")
        return saved.step, saved.position
    if cfg.resume == "latest" and accelerator.is_main_process:  # allowed on a first run; say so
        log(f"--resume latest: no checkpoint in {ckpt.checkpoint_root(out)}, training starts at step 0")
    return 0, 0


def _claim_output(accelerator, cfg: TrainConfig, out: Path, held: ExitStack) -> None:
    """One run per folder (the other ranks are this run's own): the main process locks OUT and
    removes what a killed run left half-written."""
    out.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        held.enter_context(locked_output(out, "finetune" if cfg.mode == "lora" else "train"))
        ckpt.remove_stale(out)
        remove_stale_temp_files(out)


def _optimizer(cfg: TrainConfig, params: list):
    """AdamW over the trainable parameters and its learning-rate schedule."""
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return optimizer, get_scheduler(cfg.lr_schedule, optimizer, num_warmup_steps=cfg.warmup_steps,
                                    num_training_steps=cfg.max_steps)


def _frozen_parts(cfg: TrainConfig, out: Path, model, store, dataset: TrainingSet, device) -> Frozen:
    """What the losses use and training does not change: noise schedule, L_id's face encoder, ..."""
    id_encoder = _id_encoder(cfg, out, dim=128)
    return Frozen(model=model, noise_scheduler=DDPMScheduler.from_config(model.pipe.scheduler.config),
                  id_encoder=id_encoder.to(device) if id_encoder is not None else None, store=store,
                  empty_ids=dataset.tokenize(""))


def _begin_records(accelerator, cfg: TrainConfig, out: Path, start: tuple[int, int], params: list, resume_from,
                   started_at: float) -> tuple[dict, Path]:
    """run.json (running) and the trackers; the samples log of this rank, with the steps a killed
    run logged after its last checkpoint dropped (resuming redoes them). (run facts, samples log)"""
    step, position = start
    run_facts: dict = {}  # run.json's facts: written by the main process only
    if accelerator.is_main_process:
        accelerator.init_trackers("train", config={k: v for k, v in cfg.to_dict().items()
                                                   if isinstance(v, (int, float, str, bool))})
        run_facts = {"world_size": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
                     "trainable_parameters": sum(p.numel() for p in params), "resumed_from": resume_from,
                     "checkpoint_every": cfg.resolved_checkpoint_every()}
        _write_run_json(out, cfg, {"status": "running", "start_step": step}, {}, run_facts, started_at)
    seen_log = out / "samples" / f"rank{accelerator.process_index}.jsonl"
    seen_log.parent.mkdir(parents=True, exist_ok=True)
    _truncate_jsonl(seen_log, "position", position - 1)
    if accelerator.is_main_process:
        _truncate_jsonl(out / "losses.jsonl", "step", step)
    return run_facts, seen_log


def _micro_step(accelerator, denoiser, optimizer, params: list, cfg: TrainConfig, store, first: bool,
                losses) -> dict:
    """One micro-batch: `losses()` (the loss terms), backward, and the optimizer step accelerate
    lets through at a step boundary."""
    with accelerator.accumulate(denoiser):
        terms = losses()
        if first and not store.values():
            raise RuntimeError("no attention maps were captured: L_map would silently be 0")
        accelerator.backward(terms["loss"])
        if accelerator.sync_gradients and cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    store.clear()
    return terms


def _record_micro(seen_log: Path, position: int, batch: dict, terms: dict, sums: dict) -> None:
    """The batch's ids in the samples log; its loss terms added to the step's sums."""
    with open(seen_log, "a") as fh:
        fh.write(json.dumps({"position": position, "ids": batch["id"]}) + "\n")
    for k, v in terms.items():
        sums[k] = sums.get(k, 0.0) + float(v.detach())


def _log_losses(accelerator, cfg: TrainConfig, out: Path, step: int, means: dict, lr_scheduler) -> None:
    """Every LOG_EVERY steps: the step's mean losses to tensorboard and OUT/losses.jsonl."""
    if accelerator.is_main_process and step % cfg.log_every == 0:
        accelerator.log({f"loss/{k}": v for k, v in means.items()} | {"lr": lr_scheduler.get_last_lr()[0]},
                        step=step)
        with open(out / "losses.jsonl", "a") as fh:
            fh.write(json.dumps({"step": step, **means}) + "\n")


def _finish(cfg: TrainConfig, out: Path, accelerator, model, save_checkpoint, *, step: int, start_step: int,
            checkpoint, history: list, interrupted: int, resume_from, times: tuple[float, float],
            run_facts: dict) -> TrainSummary:
    """The end, or a stop: whatever was trained since the last checkpoint is saved, the weights
    and run.json written."""
    start_time, started_at = times
    if step > start_step and (checkpoint is None or not checkpoint.name.endswith(f"{step:08d}")):
        checkpoint = save_checkpoint()
    accelerator.wait_for_everyone()
    final = None
    if accelerator.is_main_process:
        remove_attention_capture(model.unet)
        if step > 0:  # a run stopped before its first step has nothing to write
            final = out / weights_name(cfg.mode)
            save_trained_weights(model, cfg.mode, final, {"mode": cfg.mode, "steps": step})
        _write_results(out)
    accelerator.end_training()
    summary = TrainSummary(steps=step, world_size=accelerator.num_processes, seconds=time.perf_counter() - start_time,
                           weights=final, losses=history, interrupted=interrupted,
                           checkpoint=checkpoint if checkpoint is not None else resume_from)
    if accelerator.is_main_process:
        last = history[-1] if history else {}
        status = {"status": "interrupted", "signal": signal.Signals(interrupted).name} if interrupted \
            else {"status": "finished"}
        _write_run_json(out, cfg, {**status, "steps": step, "max_steps": cfg.max_steps, "weights": final,
                                   "checkpoint": summary.checkpoint, "last_losses": last},
                        {"wall_seconds": summary.seconds, "steps_this_process": len(history)}, run_facts, started_at,
                        made=len(history))
    return summary


def _train(cfg: TrainConfig, progress, log, stop: StopRequest, held: ExitStack) -> TrainSummary:
    start_time, started_at = time.perf_counter(), time.time()
    manifest = prepared_manifest_path(cfg.data)
    check_training(cfg, manifest)  # data, model files and their widths, before anything is built
    out = Path(cfg.out)
    accelerator = _make_accelerator(cfg, out)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision, torch.float32)
    # the state to resume from, read and checked before anything is built or written
    resume_from = ckpt.resolve_resume(out, cfg.resume)
    saved = ckpt.read_checkpoint(resume_from, rank, world, cfg.mode) if resume_from is not None else None
    data = data_digest(read_training_manifest(manifest))
    if saved is not None:
        ckpt.check_same_data(saved, data)
    set_seed(cfg.seed + rank)
    _claim_output(accelerator, cfg, out, held)

    model, params, size, store, denoiser, optimizer, lr_scheduler = _build(cfg, accelerator, weight_dtype)

    # data: the face image in the style the adapter is (or was) trained with; recorded in its config
    dataset = _training_set(manifest, model, size, log)
    order = DataOrder(len(dataset), cfg.batch_size, cfg.seed, rank, world)
    frozen = _frozen_parts(cfg, out, model, store, dataset, device)
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    step, position = _resume(saved, resume_from, cfg, out, log, accelerator, model=model, optimizer=optimizer,
                             lr_scheduler=lr_scheduler, generator=generator)
    start_step = step
    run_facts, seen_log = _begin_records(accelerator, cfg, out, (step, position), params, resume_from, started_at)

    def save_checkpoint():
        path = ckpt.save_checkpoint(accelerator, out, step, position, generator, cfg.keep_checkpoints,
                                    model=model, mode=cfg.mode, optimizer=optimizer, lr_scheduler=lr_scheduler,
                                    data=data)
        if accelerator.is_main_process:
            _write_results(out)
        return path

    loader = torch.utils.data.DataLoader(dataset, batch_sampler=_Batches(order, position),
                                         collate_fn=collate, num_workers=cfg.workers)
    task = progress.add_task("training", total=cfg.max_steps, completed=step, unit="steps") \
        if progress is not None and accelerator.is_main_process else None
    every = cfg.resolved_checkpoint_every()
    history, sums, micro, interrupted, checkpoint = [], {}, 0, 0, None
    batches = iter(loader)
    step_position = position  # the data position at the last step boundary
    while step < cfg.max_steps:
        if micro % cfg.grad_accum == 0:
            step_position = position
            if interrupted := _stop_signal(stop, accelerator):
                break  # at a step boundary: every rank stops here
        batch = _next_batch(batches, dataset, stop, world, cfg.workers)
        if batch is None:  # a stop while it was being built: a step not finished is redone on resume
            interrupted, position = stop.signum, step_position
            break
        terms = _micro_step(accelerator, denoiser, optimizer, params, cfg, store, micro == 0,
                            partial(compute_losses, denoiser, frozen, batch, cfg, generator, device, weight_dtype))
        position, micro = position + 1, micro + 1
        _record_micro(seen_log, position - 1, batch, terms, sums)
        if not accelerator.sync_gradients:
            continue
        lr_scheduler.step()
        step += 1
        means = {k: float(accelerator.reduce(torch.tensor(v / cfg.grad_accum, device=device), "mean"))
                 for k, v in sums.items()}
        sums = {}
        history.append({"step": step, **means})
        _log_losses(accelerator, cfg, out, step, means, lr_scheduler)
        if task is not None:
            progress.update(task, completed=step, detail=loss_line(means))
        if cfg.validate_every and step % cfg.validate_every == 0 and accelerator.is_main_process:
            validate(model, dataset, cfg, out / "validation" / f"step-{step:08d}", size)
            store.clear()
        if every and step % every == 0:
            checkpoint = save_checkpoint()

    return _finish(cfg, out, accelerator, model, save_checkpoint, step=step, start_step=start_step,
                   checkpoint=checkpoint, history=history, interrupted=interrupted, resume_from=resume_from,
                   times=(start_time, started_at), run_facts=run_facts)


def loss_line(means: dict) -> str:
    """The progress line's loss terms: the total, then each term of the objective (mse, map, id)."""
    return "  ".join(f"{name} {means[name]:.4g}" for name in ("loss", "mse", "map", "id") if name in means)


def _stop_signal(stop: StopRequest, accelerator) -> int:
    """The stop signal the ranks agree on at a step boundary (the largest any rank received)."""
    if accelerator.num_processes == 1:
        return stop.signum
    signums = accelerator.gather(torch.tensor([stop.signum], device=accelerator.device))
    return int(signums.max())


@torch.no_grad()
def validate(model, dataset: TrainingSet, cfg: TrainConfig, folder: Path, size: int) -> list[Path]:
    """Images of the first few training faces through the sampling path (`FaceMakeUp.generate`)."""
    rows = [dataset.rows[i] for i in range(min(cfg.validation_samples, len(dataset)))]
    samples = [dataset[i] for i in range(len(rows))]
    requests = [Request(prompt=r.get("caption") or "", id_embedding=s.id_embedding.numpy(),
                        face_crop=s.face_crop, seed=cfg.seed + i,
                        condition=(s.condition[0].numpy() * 255).round().astype(np.uint8))
                for i, (r, s) in enumerate(zip(rows, samples))]
    settings = Settings(steps=cfg.validation_steps, width=size, height=size)
    was_training = model.unet.training
    model.unet.eval()
    images = model.generate(requests, settings)
    model.pipe.set_ip_adapter_scale(1.0)   # generate set the inference id_scale; training uses 1.0
    model.unet.train(was_training)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{i:02d}.png")
        save_png(paths[-1], image)
    return paths


def _truncate_jsonl(path: Path, field: str, last: int) -> None:
    """Keep the lines whose `field` is <= `last` (and drop a torn last line), atomically."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)[field] <= last:
                kept.append(line)
        except (ValueError, KeyError):
            continue
    atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())


def _write_run_json(out: Path, cfg: TrainConfig, summary: dict, timings: dict, facts: dict, started: float,
                    made: int | None = None) -> None:
    """run.json; `started` identifies this invocation in its history (its "running" entry is updated
    at the end); `made`: the optimizer steps it ran."""
    write_run_record(out, "finetune" if cfg.mode == "lora" else "train", config=cfg.to_dict(),
                     summary=summary, timings=timings, started=started, made=made, **facts)


def _write_results(out: Path) -> None:
    """losses.parquet: one row per logged step with each loss term (from losses.jsonl, which
    resuming keeps exact), rewritten atomically at every checkpoint and at the end."""
    log = out / "losses.jsonl"
    rows = []
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line torn by a kill: resuming redoes that step
    write_table(out / LOSSES_FILE, pl.DataFrame(rows, infer_schema_length=None))
