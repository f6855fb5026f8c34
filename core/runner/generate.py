"""`fmu generate`: manifest -> validated rows -> faces -> (shading) -> batches -> images + results.

Bad rows and failed batches become result rows with a status and a reason; the run always
finishes, writes results.parquet and run.json, and re-running the same command resumes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import RowError, UsageError
from ..faces import get_backend
from ..faces.cache import FaceCache
from ..images import save_png
from ..manifest import read_manifest, validate
from ..model.pipeline import Request, Settings
from .conditions import ConditionProvider
from .plan import Job, plan_batches, plan_jobs
from .results import ResultStore
from .runinfo import write_run_json


@dataclass
class GenerateConfig:
    manifest: Path
    out: Path
    preset: str | None = "tiny"
    base_model: str | None = None
    adapter: Path | None = None
    image_encoder: str | None = None
    face_backend: str | None = None       # default: the preset's (dlib) or insightface
    face_models: Path | None = None
    multi_face: str = "largest"
    device: str = "cpu"
    batch_size: int = 4
    seed: int = 0
    steps: int | None = None
    guidance_scale: float = 7.5
    id_scale: float = 0.5
    s_scale: float = 0.7
    shading_scale: float = 0.5
    shading: bool = True
    save_conditions: bool = False
    renderer: str = "auto"
    cache_dir: Path | None = None
    prefix: str = "best quality"
    extra: dict = field(default_factory=dict)


@dataclass
class RunSummary:
    total: int
    ok: int
    failed: int
    skipped: int
    analyses: int
    seconds: float

    @property
    def exit_code(self) -> int:
        return 0 if self.failed == 0 else 1


def _resolve_model(cfg: GenerateConfig):
    from ..model.presets import TINY_SIZE, TINY_VERSION, ensure_preset

    if cfg.base_model:
        if cfg.adapter is None:
            raise UsageError("--base-model needs --adapter (an fmu adapter checkpoint)")
        return cfg.base_model, cfg.adapter, 512, {"base_model": cfg.base_model}
    if cfg.preset is None:
        raise UsageError("give --preset or --base-model with --adapter")
    base, adapter = ensure_preset(cfg.preset)
    return base, cfg.adapter or adapter, TINY_SIZE, {"preset": TINY_VERSION}


def _id_similarity(backend, ref_embedding: np.ndarray, image: np.ndarray):
    faces = backend.detect(image)
    if not faces:
        return None, "no face detected in output"
    face = max(faces, key=lambda f: f.area)
    return backend.similarity(ref_embedding, face.embedding), None


def run_generate(cfg: GenerateConfig, progress=None) -> RunSummary:
    import torch

    start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = Path(cfg.manifest)
    df = read_manifest(manifest_path)

    base, adapter_path, default_size, model_identity = _resolve_model(cfg)
    face_backend_name = cfg.face_backend or ("dlib" if cfg.preset and not cfg.base_model else "insightface")
    backend = get_backend(face_backend_name, device=cfg.device, models_dir=cfg.face_models)
    from ..model.load import load_model

    model = load_model(base, adapter_path, device=cfg.device,
                       dtype=torch.float16 if cfg.device.startswith("cuda") else torch.float32,
                       shading=cfg.shading, image_encoder=cfg.image_encoder)
    tokenizer = model.pipe.tokenizer
    validation = validate(df, manifest_path.parent,
                          count_tokens=lambda s: len(tokenizer(s).input_ids),
                          token_limit=tokenizer.model_max_length)

    defaults = Settings(steps=cfg.steps or 50, guidance_scale=cfg.guidance_scale, id_scale=cfg.id_scale,
                        s_scale=cfg.s_scale, shading_scale=cfg.shading_scale if cfg.shading else 0.0,
                        width=default_size, height=default_size)
    jobs = plan_jobs(validation.rows, defaults, cfg.seed)
    store = ResultStore(out)
    done = store.done_keys()
    todo = [j for j in jobs if j.key not in done]

    cache = FaceCache(cfg.cache_dir or out / ".cache", backend)
    conditions = ConditionProvider(cfg.cache_dir or out / ".cache", cfg.renderer,
                                   enabled=cfg.shading and model.shading_net is not None)

    # invalid rows: one failed record per requested image (or one when num_images is unusable)
    failures = []
    for row_index, problems in validation.errors_by_row().items():
        reason = "; ".join(p.reason for p in problems)
        n = df["num_images"][row_index] if "num_images" in df.columns else 1
        try:
            n = max(1, min(int(n), 64))
        except (TypeError, ValueError):
            n = 1
        rid = validation.ids[row_index]
        for k in range(n):
            failures.append({"id": rid, "k": k, "row": row_index, "status": "failed", "error": reason,
                             "prompt": df["prompt"][row_index] if "prompt" in df.columns else None,
                             "finished_at": time.time()})
    store.append(failures)

    order = [j.key for j in jobs]
    batches = plan_batches(todo, cfg.batch_size)
    task = progress.add_task("generating", total=len(todo)) if progress else None
    for batch in batches:
        records = _run_batch(batch, model, backend, cache, conditions, cfg, out)
        store.append(records)
        if progress:
            progress.advance(task, len(batch))

    merged = store.merge(order=order + [(r["id"], r["k"], r["row"]) for r in failures])
    counts = {s: merged.filter(merged["status"] == s).height for s in ("ok", "failed", "skipped")}
    summary = RunSummary(total=merged.height, ok=counts["ok"], failed=counts["failed"],
                         skipped=counts["skipped"], analyses=cache.analyses,
                         seconds=time.perf_counter() - start)
    write_run_json(out, cfg=asdict(cfg), model_identity=model_identity, base=base, adapter=adapter_path,
                   backend=backend, summary=asdict(summary), timings=asdict(model.timings),
                   validation=[asdict(p) for p in validation.problems])
    return summary


def _run_batch(batch: list[Job], model, backend, cache: FaceCache, conditions: ConditionProvider,
               cfg: GenerateConfig, out: Path) -> list[dict]:
    t0 = time.perf_counter()
    records, requests, live = [], [], []
    for job in batch:
        base_record = {"id": job.row.id, "k": job.k, "row": job.row.index, "seed": job.seed, "prompt": job.row.prompt,
                       "reference": str(job.row.reference),
                       "target": str(job.row.target) if job.row.target else None,
                       "steps": job.settings.steps, "guidance_scale": job.settings.guidance_scale,
                       "id_scale": job.settings.id_scale, "width": job.settings.width,
                       "height": job.settings.height}
        try:
            analysis = cache.analyse_file(job.row.reference, cfg.multi_face)
        except RowError as exc:
            records.append({**base_record, "status": "failed", "error": f"reference {exc.reason}",
                            "finished_at": time.time()})
            continue
        try:
            condition = conditions.get(job.row.reference, job.row.target, job.settings.width,
                                       job.settings.height)
        except RowError as exc:
            where = "target" if job.row.target else "reference"
            records.append({**base_record, "status": "failed", "error": f"{where} shading {exc.reason}",
                            "finished_at": time.time()})
            continue
        prompt = f"{cfg.prefix}, {job.row.prompt}" if cfg.prefix else job.row.prompt
        requests.append(Request(prompt=prompt, id_embedding=analysis.embedding, face_crop=analysis.crop,
                                seed=job.seed, negative_prompt=job.row.negative_prompt,
                                condition=condition.condition if condition is not None else None))
        live.append((job, base_record, analysis, condition))
    analysis_seconds = time.perf_counter() - t0
    if not requests:
        return records
    t1 = time.perf_counter()
    try:
        images = model.generate(requests, batch[0].settings)
    except Exception as exc:  # a failed batch fails its rows, never the run
        for job, base_record, _, _ in live:
            records.append({**base_record, "status": "failed",
                            "error": f"generation_failed: {type(exc).__name__}: {exc}".splitlines()[0],
                            "finished_at": time.time()})
        return records
    batch_seconds = time.perf_counter() - t1
    for (job, base_record, analysis, condition), image in zip(live, images):
        path = out / job.image_name
        save_png(path, image)
        record = {**base_record, "status": "ok", "image": job.image_name,
                  "batch_seconds": batch_seconds, "analysis_seconds": analysis_seconds,
                  "finished_at": time.time()}
        if condition is not None and cfg.save_conditions:
            cond_name = f"conditions/{job.row.id}.png"
            save_png(out / cond_name, condition.condition)
            record["condition"] = cond_name
        sim, reason = _id_similarity(backend, analysis.embedding, image)
        record["id_similarity"], record["id_similarity_reason"] = sim, reason
        record.update(conditions.consistency(condition, image))
        records.append(record)
    return records
