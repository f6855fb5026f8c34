"""One device's worker: loads the model once, then turns work units (batches) into images.

Pipelined: while a unit denoises, the next unit's references are analysed (face + shading, from
the shared on-disk cache when another worker got there first) and the previous unit's images are
encoded, written and scored on a background thread.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import RowError
from ..faces import get_backend
from ..faces.cache import FaceCache
from ..images import save_png
from ..model.pipeline import Request
from ..scoring.facesim import id_similarity  # the same code `fmu score` uses
from .conditions import ConditionProvider
from .plan import Job
from .results import ResultStore


@dataclass
class Prepared:
    jobs: list[Job]
    records: list[dict]          # rows that already failed during analysis
    live: list[tuple]            # (job, base_record, analysis, condition)
    requests: list[Request]
    seconds: float


class Worker:
    def __init__(self, cfg, device: str, model_spec: tuple):
        import torch

        from ..model.load import load_model, resolve_dtype

        base, adapter, _, _ = model_spec
        if cfg.threads:
            # CPU float results depend on the intra-op thread count (reduction order): pin it to
            # make images bit-identical across process layouts (torchrun sets 1 by default)
            torch.set_num_threads(cfg.threads)
        self.cfg, self.device = cfg, device
        # who made each image: rank (under a launcher), device and process
        self.name = f"rank{os.environ.get('RANK', '0')}:{device}:pid{os.getpid()}"
        self.out = Path(cfg.out)
        self.store = ResultStore(self.out)
        self.backend = get_backend(cfg.face_backend, device=device, models_dir=cfg.face_models)
        cache_root = Path(cfg.cache_dir or self.out / ".cache")
        self.cache = FaceCache(cache_root, self.backend)
        self.model = load_model(
            base, adapter, device=device, dtype=resolve_dtype(cfg.precision, device), shading=cfg.shading,
            image_encoder=cfg.image_encoder, lora=cfg.adapter_lora, vae=cfg.vae, scheduler=cfg.scheduler,
            base_config=cfg.base_config, vae_slicing=cfg.vae_slicing, vae_tiling=cfg.vae_tiling,
            compile=cfg.compile, offload=cfg.offload)
        if cfg.lora is not None:
            from training.lora_apply import apply_lora

            apply_lora(self.model, cfg.lora, scale=cfg.lora_scale)
        self.conditions = ConditionProvider(cache_root, cfg.renderer,
                                            enabled=cfg.shading and self.model.shading_net is not None)

    # -- stages -------------------------------------------------------------------------
    def prepare(self, jobs: list[Job]) -> Prepared:
        t0 = time.perf_counter()
        records, live, requests = [], [], []
        for job in jobs:
            base_record = {"id": job.row.id, "k": job.k, "row": job.row.index, "seed": job.seed,
                           "prompt": job.row.prompt, "reference": str(job.row.reference),
                           "target": str(job.row.target) if job.row.target else None,
                           "steps": job.settings.steps, "guidance_scale": job.settings.guidance_scale,
                           "id_scale": job.settings.id_scale, "width": job.settings.width,
                           "height": job.settings.height}
            try:
                analysis = self.cache.analyse_file(job.row.reference, self.cfg.multi_face)
            except RowError as exc:
                records.append(_failed(base_record, f"reference {exc.reason}"))
                continue
            try:
                condition = self.conditions.get(job.row.reference, job.row.target, job.settings.width,
                                                job.settings.height)
            except RowError as exc:
                where = "target" if job.row.target else "reference"
                records.append(_failed(base_record, f"{where} shading {exc.reason}"))
                continue
            prompt = f"{self.cfg.prefix}, {job.row.prompt}" if self.cfg.prefix else job.row.prompt
            requests.append(Request(prompt=prompt, id_embedding=analysis.embedding, face_crop=analysis.crop,
                                    seed=job.seed, negative_prompt=job.row.negative_prompt,
                                    condition=condition.condition if condition is not None else None))
            live.append((job, base_record, analysis, condition))
        return Prepared(jobs, records, live, requests, time.perf_counter() - t0)

    def denoise(self, prep: Prepared):
        if not prep.requests:
            return None, 0.0
        t0 = time.perf_counter()
        images = self.model.generate(prep.requests, prep.jobs[0].settings)
        return images, time.perf_counter() - t0

    def finish(self, prep: Prepared, images, seconds: float, error: str | None = None) -> list[dict]:
        """Write images, score them and append the unit's result shard (atomically)."""
        records = [{**r, "worker": self.name} for r in prep.records]
        for i, (job, base_record, analysis, condition) in enumerate(prep.live):
            if error is not None:
                records.append({**_failed(base_record, error), "worker": self.name})
                continue
            image = images[i]
            save_png(self.out / job.image_name, image)
            record = {**base_record, "status": "ok", "worker": self.name, "image": job.image_name,
                      "batch_seconds": seconds,
                      "analysis_seconds": prep.seconds, "finished_at": time.time()}
            if condition is not None and self.cfg.save_conditions:
                name = f"conditions/{job.row.id}.png"
                if not (self.out / name).exists():
                    save_png(self.out / name, condition.condition)
                record["condition"] = name
            record["id_similarity"], record["id_similarity_reason"] = id_similarity(
                self.backend, analysis.embedding, image)
            record.update(self.conditions.consistency(condition, image))
            records.append(record)
        self.store.append(records)
        return records

    # -- the pipelined loop ---------------------------------------------------------------
    def run(self, units, on_done=None) -> None:
        """`units` yields (unit_id, jobs); `on_done(unit_id, records)` after each shard is written.

        Pulling the next unit happens on the prefetch thread too: with a shared queue, asking for
        more work may block, and that must never hold up the unit in hand."""
        iterator = iter(units)

        def fetch_and_prepare():
            nxt = next(iterator, None)
            return None if nxt is None else (nxt[0], self.prepare(nxt[1]))

        with ThreadPoolExecutor(1) as prefetch, ThreadPoolExecutor(1) as writer:
            pending_write: Future | None = None
            upcoming = prefetch.submit(fetch_and_prepare)
            while (item := upcoming.result()) is not None:
                unit_id, prep = item
                upcoming = prefetch.submit(fetch_and_prepare)
                try:
                    images, seconds = self.denoise(prep)
                    error = None
                except Exception as exc:  # a failed batch fails its rows, never the run
                    images, seconds = None, 0.0
                    error = f"generation_failed: {type(exc).__name__}: {exc}".splitlines()[0]
                if pending_write is not None:
                    pending_write.result()
                pending_write = writer.submit(self._finish_and_report, unit_id, prep, images, seconds, error,
                                              on_done)
            if pending_write is not None:
                pending_write.result()

    def _finish_and_report(self, unit_id, prep, images, seconds, error, on_done):
        records = self.finish(prep, images, seconds, error)
        if on_done is not None:
            on_done(unit_id, records)


def _failed(base_record: dict, reason: str) -> dict:
    return {**base_record, "status": "failed", "error": reason, "finished_at": time.time()}
