"""One device's worker: loads the model once, then turns work units (batches) into images.

Pipelined: while a unit denoises, the next unit's references are analysed (face + shading, from
the shared on-disk cache when another worker got there first) and the previous unit's images are
encoded, written and scored on a background thread.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import torch

from ..devices import face_device
from ..digests import file_digest, file_stamp
from ..errors import row_reason
from ..faces import get_backend
from ..faces.cache import FaceCache
from ..images import save_png
from ..model.facemakeup import FaceMakeUp
from ..model.load import resolve_dtype
from ..model.pipeline import Request
from ..model.settings import with_prefix
from . import people_row
from .conditions import ConditionProvider, frame_label
from .config import GenerateConfig, LoadOptions, SourceOptions
from .gating import Attempt, attempt_seed
from .gating import summary as gating_summary
from .plan import Job
from .results import ResultStore
from .writers import make_writer


@dataclass
class Gated:
    image: object                # the attempt kept
    scores: dict                 # its score fields
    fields: dict                 # attempts, their seeds and scores, accepted (gating.summary)
    rejected: list[Attempt]      # the others, when --keep-rejected


@dataclass
class Prepared:
    jobs: list[Job]
    records: list[dict]          # rows that already failed during analysis
    live: list[tuple]            # (job, base_record, analysis, condition)
    requests: list[Request]
    seconds: float


def load_model(load: LoadOptions, device: str, base, adapter) -> FaceMakeUp:
    """The model of a generate run: loaded, then its features switched on by their calls, in the
    order facemakeup.py gives (a speed LoRA before the offload hooks, compile last)."""
    vae_dtype = None if load.vae_precision == "auto" else resolve_dtype(load.vae_precision, device)
    # offloaded: loaded on the CPU, the accelerator gets each model only when it runs
    model = FaceMakeUp.from_pretrained(
        base, adapter, device="cpu" if load.offload else device, dtype=resolve_dtype(load.precision, device),
        vae_dtype=vae_dtype, shading=load.shading, image_encoder=load.image_encoder, lora=load.adapter_lora,
        vae=load.vae, base_config=load.base_config)
    model.set_scheduler(load.scheduler)
    if load.vae_slicing:
        model.enable_vae_slicing()
    if load.vae_tiling:
        model.enable_vae_tiling()
    if load.speed_lora is not None:
        model.load_speed_lora(load.speed_lora, load.speed_lora_scale)
    if load.offload:
        model.enable_model_cpu_offload(device)
    if load.vae_decoder is not None:
        model.set_vae_decoder(load.vae_decoder)
    if load.compile:
        model.compile()
    return model


class Worker:
    """`cfg`'s groups go whole to what uses them: `load` to `load_model`, `output` to the writer,
    `source` to the face analysis and the shading conditions, `gate` to best-of-N."""

    def __init__(self, cfg: GenerateConfig, device: str, model_spec):
        base, adapter = model_spec.base, model_spec.adapter
        if cfg.engine.threads:
            # CPU float results depend on the intra-op thread count (reduction order): pin it to
            # make images bit-identical across process layouts (torchrun sets 1 by default)
            torch.set_num_threads(cfg.engine.threads)
        self.source, self.output, self.gate_options = cfg.source, cfg.output, cfg.gate
        self.shading, self.device = cfg.load.shading, device
        # who made each image: rank (under a launcher), device and process
        self.name = f"rank{os.environ.get('RANK', '0')}:{device}:pid{os.getpid()}"
        self.out = Path(cfg.out)
        self.store = ResultStore(self.out)
        self.writer = make_writer(cfg.output.writer, self.out, shard_size=cfg.output.shard_size)
        self.model = load_model(cfg.load, device, base, adapter)
        if cfg.load.lora is not None:
            self.model.load_lora_weights(cfg.load.lora, scale=cfg.load.lora_scale)
        self._open_sources(cfg.source, device)
        self._unsaved: list[tuple[object, list[dict]]] = []  # (unit_id, records) whose shard failed
        _exit_with_parent()

    def _open_sources(self, source: SourceOptions, device: str) -> None:
        """The face analysis (cached) and the shading conditions of the references."""
        # onnxruntime's face models: the same GPU under CUDA, the CPU beside an MPS / XPU device
        self.backend = get_backend(source.face_backend, device=face_device(device), models_dir=source.face_models)
        cache_root = Path(source.cache_dir or self.out / ".cache")
        # the CLIP face image in the style the adapter was trained with, unless the user says
        self.cache = FaceCache(cache_root, self.backend, crop=source.face_crop or self.model.cfg.face_crop,
                               pick="largest" if source.multi_face == "largest" else "best")
        self.conditions = ConditionProvider(cache_root, source.renderer,
                                            enabled=self.shading and self.model.shading_net is not None,
                                            frame_scale=source.frame_scale if source.frame == "face" else None)
        self.frame = frame_label(source.frame, source.frame_scale, self.shading)

    # -- stages -------------------------------------------------------------------------
    def prepare(self, jobs: list[Job]) -> Prepared:
        t0 = time.perf_counter()
        records, live, requests = [], [], []
        for job in jobs:
            base_record = {"id": job.row.id, "k": job.k, "row": job.row.index, "seed": job.seed,
                           "prompt": job.row.prompt, "negative_prompt": job.row.negative_prompt,
                           "reference": str(job.row.reference),
                           "target": str(job.row.target) if job.row.target else None,
                           "steps": job.settings.steps, "guidance_scale": job.settings.guidance_scale,
                           "id_scale": job.settings.id_scale, "width": job.settings.width,
                           "height": job.settings.height, "frame": self.frame, **asdict(job.row.controls)}
            if job.row.people:  # several people (or one placed in a box): people_row.py
                problem = self._controls_problem(job.row.controls, base_record)
                if problem is not None:
                    records.append(_failed(base_record, problem))
                    continue
                # each person rendered like a one-person row, with the row's pose / expression / light
                render = partial(self.conditions.get, request=job.row.controls) if self.conditions.enabled else None
                try:
                    made = people_row.prepare(job, base_record, self.cache, render, self.conditions.wants_landmarks,
                                          self.source.multi_face, self.source.prefix)
                except Exception as exc:  # noqa: BLE001  one person's bad input fails its row only
                    reason = exc.reason if isinstance(exc, people_row.PersonFailed) else _reason(exc, "analysis_failed")
                    records.append(_failed(base_record, reason))
                    continue
                requests.append(made.request)
                live.append((job, base_record, made.analyses, made.condition))
                continue
            try:
                analysis = self.cache.analyse_file(job.row.reference, self.source.multi_face)
                _record_source(base_record, "reference", job.row.reference)
            except Exception as exc:  # noqa: BLE001  one bad reference (or cache write) fails its row only
                records.append(_failed(base_record, f"reference {_reason(exc, 'analysis_failed')}"))
                continue
            landmarks = analysis.landmarks
            if job.row.target and self.conditions.wants_landmarks:
                try:  # the face frame is cut around the target's face (cached like a reference's)
                    landmarks = self.cache.analyse_file(job.row.target, self.cache.pick).landmarks
                except Exception as exc:  # noqa: BLE001
                    records.append(_failed(base_record, f"target {_reason(exc, 'analysis_failed')}"))
                    continue
            request = job.row.controls
            problem = self._controls_problem(request, base_record)
            if problem is not None:
                records.append(_failed(base_record, problem))
                continue
            try:
                if job.row.target:
                    _record_source(base_record, "target", job.row.target)
                condition = self.conditions.get(job.row.reference, job.row.target, job.settings.width,
                                                job.settings.height, landmarks, request)
            except Exception as exc:  # noqa: BLE001
                where = "target" if job.row.target else "reference"
                records.append(_failed(base_record, f"{where} shading {_reason(exc, 'shading_failed')}"))
                continue
            requests.append(Request(prompt=with_prefix(job.row.prompt, self.source.prefix),
                                    id_embedding=analysis.embedding, face_crop=analysis.crop,
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

    def finish(self, prep: Prepared, images, seconds: float, error: str | None = None,
               gated: list[Gated] | None = None) -> list[dict]:
        """Write the unit's images (atomically) and score them; `save` appends the result shard.
        A failed image write (disk full, permission denied) fails that row with the reason.
        `gated`: `gate`'s choice per live row (the image kept, its scores, the attempts)."""
        records = [{**r, "worker": self.name} for r in prep.records]
        for i, (job, base_record, analysis, condition) in enumerate(prep.live):
            if error is not None:
                records.append({**_failed(base_record, error), "worker": self.name})
                continue
            image = gated[i].image if gated is not None else images[i]
            record = {**base_record, "status": "ok", "worker": self.name,
                      "batch_seconds": seconds,
                      "analysis_seconds": prep.seconds, "finished_at": time.time()}
            if condition is not None:  # the square of the source photo this image shows
                record["frame_left"], record["frame_top"], record["frame_side"] = condition.frame
            # scored before it is written: a dataset writer stores the whole record beside the image
            if gated is not None:  # scored while gating: the attempts' seeds and scores, accepted
                record.update(gated[i].fields)
            record.update(gated[i].scores if gated is not None else self._scores(job, analysis, condition, image))
            target = self.out / job.image_name
            try:  # disk full / permission denied: this row fails with the reason, the run goes on
                record["image"] = self.writer.write(record, image)
                if condition is not None and self.output.save_conditions:
                    name = f"conditions/{job.row.id}.png"
                    target = self.out / name
                    if not target.exists():
                        save_png(target, condition.condition)
                    record["condition"] = name
                if gated is not None and gated[i].rejected:  # --keep-rejected: the attempts not kept
                    record["rejected_images"] = self._save_rejected(job, gated[i].rejected)
            except OSError as exc:
                records.append({**_failed(base_record, _write_failed(exc, target)), "worker": self.name})
                continue
            records.append(record)
        return records

    def _scores(self, job: Job, analysis, condition, image) -> dict:
        """An output's identity similarity and its pose / light errors against the condition."""
        if job.row.people:  # faces matched to the people, pose and light per box: people_row.py
            return people_row.scores(self.backend, self.conditions, job.row.people, analysis, condition,
                                 image, self._no_condition())
        sim, reason = self.backend.id_similarity(analysis.embedding, image)
        # one person: the worst is the one
        scores = {"id_similarity": sim, "id_similarity_reason": reason, "id_similarity_min": sim}
        if condition is None:  # nothing to be consistent with: say why the columns are empty
            scores["consistency_reason"] = f"no_condition: no 3D condition ({self._no_condition()})"
        else:
            scores.update(self.conditions.consistency(condition, image))
        return scores

    def gate(self, prep: Prepared, images) -> list[Gated]:
        """Best-of-N (gating.py): score each image; those that miss a threshold are made again with
        their next seed, all of the unit's misses in one batch, up to --max-tries attempts."""
        gate = self.gate_options
        tries = []
        for i, (job, _, analysis, condition) in enumerate(prep.live):
            scores = self._scores(job, analysis, condition, images[i])
            tries.append([Attempt(job.seed, images[i], scores, gate.misses(scores, condition is not None))])
        for t in range(1, gate.max_tries):
            missed = [i for i, attempts in enumerate(tries) if attempts[-1].reasons]
            if not missed:
                break
            seeds = [attempt_seed(prep.live[i][0].seed, t) for i in missed]
            requests = [replace(prep.requests[i], seed=s) for i, s in zip(missed, seeds)]
            again = self.model.generate(requests, prep.jobs[0].settings)
            for i, seed, image in zip(missed, seeds, again):
                job, _, analysis, condition = prep.live[i]
                scores = self._scores(job, analysis, condition, image)
                tries[i].append(Attempt(seed, image, scores, gate.misses(scores, condition is not None)))
        gated = []
        for i, attempts in enumerate(tries):
            best, fields = gating_summary(gate, attempts, prep.live[i][3] is not None)
            rejected = [a for j, a in enumerate(attempts) if j != best] if gate.keep_rejected else []
            gated.append(Gated(attempts[best].image, attempts[best].scores, fields, rejected))
        return gated

    def _save_rejected(self, job: Job, rejected: list[Attempt]) -> list[str]:
        """The attempts not kept, as `rejected/ID_K_sSEED.png` (--keep-rejected)."""
        names = []
        for attempt in rejected:
            name = f"rejected/{job.row.id}_{job.k}_s{attempt.seed}.png"
            save_png(self.out / name, attempt.image)
            names.append(name)
        return names

    def _controls_problem(self, request, record: dict) -> str | None:
        """Why the pose / expression / light a row asks for cannot be made (None: they can, or it
        asks for none); records the expression image's stamp and digest."""
        if request.empty:
            return None
        if not self.conditions.enabled:  # they need the 3D channel
            return ("no_condition: pose, expression or light asked for, but there is no 3D condition "
                    f"({self._no_condition()})")
        try:
            if request.expression_file:
                _record_source(record, "expression", Path(request.expression_file))
            self.conditions.resolve(request)
        except Exception as exc:  # noqa: BLE001  an unusable expression image fails its row only
            return f"expression {_reason(exc, 'shading_failed')}"
        return None

    def _no_condition(self) -> str:
        return "--no-shading" if not self.shading else "the adapter has no ShadingNet"

    def save(self, unit_id, records: list[dict], on_done=None, strict: bool = False) -> None:
        """Append the unit's shard together with any earlier one that could not be written, then
        report those units done. On OSError the records wait for the next try and the unit is NOT
        reported done (a multi-process parent must not count it finished); `strict` raises instead."""
        if unit_id is not None:
            self._unsaved.append((unit_id, records))
        if not self._unsaved:
            return
        try:
            self.store.append([r for _, recs in self._unsaved for r in recs])
        except OSError as exc:
            if not strict:
                return
            n = sum(len(recs) for _, recs in self._unsaved)
            raise OSError(exc.errno, f"cannot write results to {self.store.shards}: {exc.strerror or exc}; "
                                     f"{n} finished record(s) of {len(self._unsaved)} unit(s) not saved. "
                                     "Free space (or fix permissions) and re-run the same command: it "
                                     "resumes") from None
        saved, self._unsaved = self._unsaved, []
        for uid, recs in saved:
            if on_done is not None:
                on_done(uid, recs)

    def stats(self) -> dict:
        """This worker's counters so far: face analyses, seconds in the model, face models used."""
        return {"analyses": self.cache.analyses, "model_seconds": self.model.timings.model_seconds,
                "face_identity": {**self.cache.backend.identity(), "clip_crop": self.cache.crop}}

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
            def next_unit():
                # while waiting for work (a shared queue may block), records whose shard could not
                # be written get one more try; still failing -> raise: never wait forever with them
                while True:
                    try:
                        return upcoming.result(timeout=2.0)
                    except FutureTimeout:
                        if self._unsaved and (pending_write is None or pending_write.done()):
                            if pending_write is not None:
                                pending_write.result()
                            self.save(None, [], on_done, strict=True)

            while (item := next_unit()) is not None:
                unit_id, prep = item
                upcoming = prefetch.submit(fetch_and_prepare)
                try:
                    images, seconds = self.denoise(prep)
                    error = None
                except Exception as exc:  # noqa: BLE001  a failed batch fails its rows, never the run
                    images, seconds = None, 0.0
                    error = f"generation_failed: {type(exc).__name__}: {exc}".splitlines()[0]
                if pending_write is not None:
                    pending_write.result()
                # gating scores here, after the previous unit's scoring ended: the face and pose
                # models are not shared between threads
                gated = None
                if error is None and images is not None and self.gate_options.active:
                    try:
                        gated = self.gate(prep, images)
                    except Exception as exc:  # noqa: BLE001  a failed retry batch fails its rows, never the run
                        error = f"generation_failed: {type(exc).__name__}: {exc}".splitlines()[0]
                pending_write = writer.submit(self._finish_and_report, unit_id, prep, images, seconds, error,
                                              on_done, gated)
            if pending_write is not None:
                pending_write.result()
        self.writer.close()  # a buffering writer completes its files before their rows count as done
        self.save(None, [], on_done, strict=True)  # never end quietly with finished rows unrecorded

    def _finish_and_report(self, unit_id, prep, images, seconds, error, on_done, gated=None):
        self.save(unit_id, self.finish(prep, images, seconds, error, gated), on_done)


def _record_source(record: dict, name: str, path: Path) -> None:
    """The bytes the image is made from (resume redoes it when they change): stamp, then sha256
    (remembered per file version, so rows sharing a file cost no second read)."""
    record[f"{name}_stamp"] = file_stamp(path)
    record[f"{name}_sha256"] = file_digest(path)


def _failed(base_record: dict, reason: str) -> dict:
    return {**base_record, "status": "failed", "error": reason, "finished_at": time.time()}


def _reason(exc: Exception, kind: str) -> str:
    """`kind: message` on one line: a RowError's own, `io_error` for OSError, else `kind`."""
    return row_reason(exc, kind)


def _write_failed(exc: OSError, path: Path) -> str:
    return f"write_failed: cannot write {path}: {exc.strerror or exc}".splitlines()[0]


def _exit_with_parent() -> None:
    """In a worker process started by `multiprocess_distributor`: exit when the parent dies
    (kill -9 included). Otherwise an orphan keeps denoising and writing into the output folder
    under a re-run, then blocks forever on the dead parent's queue holding a model in memory."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        parent.join()  # returns when the parent's sentinel closes, i.e. it is gone
        os._exit(70)

    threading.Thread(target=watch, name="fmu-parent-watch", daemon=True).start()
