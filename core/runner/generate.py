"""`fmu generate`: manifest -> validated rows -> faces -> (shading) -> batches -> images + results.

Bad rows and failed batches become result rows with a status and a reason; the run always
finishes, writes results.parquet and run.json, and re-running the same command resumes.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import polars as pl

from ..manifest import validate
from ..model.settings import with_prefix
from ..model.spec import ModelSpec
from ..out_lock import locked_output, remove_stale_temp_files
from ..run_record import read_run_json, write_run_json
from .conditions import frame_label
from .config import GenerateConfig
from .distribute import pick_engine, rank_shard
from .plan import KEY, Units, plan_table
from .preflight import CheckedRun, check_generate, load_tokenizer
from .ranks import Ranks
from .results import ResultStore
from .writers import make_writer


@dataclass
class RunSummary:
    total: int
    ok: int
    failed: int
    skipped: int      # images already finished by an earlier run of this --out: kept, not redone
    analyses: int
    seconds: float
    interrupted: int = 0  # the signal that stopped the run early (0: it ran to the end)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 128 + self.interrupted
        return 0 if self.failed == 0 else 1


def _make_worker(cfg: GenerateConfig, model_spec: ModelSpec, device: str):
    from .worker import Worker  # deferred: torch + diffusers load only once every option has passed its check

    return Worker(cfg, device, model_spec)


def _failure_records(df, validation) -> list[dict]:
    """Invalid rows: one failed record per requested image (one when num_images is unusable)."""
    records = []
    for row_index, problems in validation.errors_by_row().items():
        reason = "; ".join(p.reason for p in problems)
        n = 1
        if "num_images" in df.columns and not any(p.column == "num_images" for p in problems):
            n = int(df["num_images"].cast(pl.Int64, strict=False)[row_index] or 1)
        for k in range(n):
            records.append({"id": validation.id_series[row_index], "k": k, "row": row_index, "status": "failed",
                            "error": reason, "finished_at": time.time(),
                            "prompt": _text(df["prompt"][row_index]) if "prompt" in df.columns else None})
    return records


def _text(value) -> str | None:
    """A cell for the `prompt` column of a failure record: text, or nothing (a Parquet list,
    struct or bytes cell is what failed the row)."""
    return value if isinstance(value, str) else None


def _plan(checked: CheckedRun, tokenizer, store: ResultStore, held: set[str]):
    """(validation, plan, defaults, rows still to generate, moved records) of the checked run.
    Without a tokenizer the prompts' token count is not checked: a re-run whose every image is
    finished (same prompts, so they passed it when they were made) answers from polars and the
    results alone; `_generate` plans again with the tokenizer when anything is left to do."""
    cfg, df, model_spec = checked.cfg, checked.manifest, checked.model_spec
    # the limit applies to what the text encoder sees: the prompt with its prefix
    tokens = {} if tokenizer is None else {
        "count_tokens": lambda s: len(tokenizer(with_prefix(s, cfg.source.prefix)).input_ids),
        "token_limit": tokenizer.model_max_length}
    validation = validate(df, Path(cfg.manifest).parent, **tokens)
    defaults = cfg.sampling.settings(model_spec.size, cfg.load.shading)
    plan = plan_table(validation.table, defaults, cfg.sampling.seed, cfg.engine.batch_size).with_columns(
        frame=pl.lit(frame_label(cfg.source.frame, cfg.source.frame_scale, cfg.load.shading)))
    # finished jobs drop out of their unit; a unit keeps the members it was planned with; what is
    # finished is what the results say and the writer still holds
    todo, moved = store.resume(plan, held)
    return validation, plan, defaults, todo, moved


def run_generate(cfg: GenerateConfig, progress=None, log=None, checked: CheckedRun | None = None) -> RunSummary:
    """`checked`: `check_generate(cfg)`'s result, when the caller checked first (the command line
    does, before it draws a progress bar). `log`: where a warning line goes (None: dropped)."""
    start, started_at = time.perf_counter(), time.time()
    checked = checked or check_generate(cfg, log)  # from here on the run's own copy; the caller's stays as given
    cfg = checked.cfg
    out = Path(cfg.out)
    ranks = Ranks.from_env()
    # one run per output folder: rank 0 holds the lock (the other ranks are its own), and what a
    # killed run left half-written is removed before any rank writes
    with locked_output(out, "generate") if ranks.is_main else _created(out):
        if ranks.is_main:
            remove_stale_temp_files(out, out / ".shards", out / "images", out / "conditions", out / ".ranks",
                                    out / "rejected")
        ranks.wait_for_everyone()
        return _generate(checked, ranks, progress, start, started_at)


@contextmanager
def _created(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    yield out


class FailedSoFar:
    """Failed images recorded by this run so far, for the progress line: the result shards that
    appeared since it started, each read once (its status column), the folder listed at most
    every `every` seconds (a long run has many shards)."""

    def __init__(self, store: ResultStore, every: float = 2.0):
        self.store, self.every, self.failed, self.last = store, every, 0, float("-inf")
        self.seen = set(self._shards())

    def _shards(self) -> list[Path]:
        return sorted(self.store.shards.glob("*.parquet")) if self.store.shards.is_dir() else []

    def count(self) -> int:
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            for path in (p for p in self._shards() if p not in self.seen):
                self.seen.add(path)
                try:
                    self.failed += int((pl.read_parquet(path, columns=["status"])["status"] == "failed").sum())
                except (OSError, pl.exceptions.PolarsError):  # only the progress line depends on it
                    pass
        return self.failed


def _generate(checked: CheckedRun, ranks, progress, start: float, started_at: float) -> RunSummary:
    cfg, df, model_spec = checked.cfg, checked.manifest, checked.model_spec
    out = Path(cfg.out)
    devices = ranks.local_devices(cfg.engine.device, checked.devices)
    base, adapter_path, model_identity = model_spec.base, model_spec.adapter, model_spec.identity
    store, held = ResultStore(out), make_writer(cfg.output.writer, out).done()
    validation, plan, defaults, todo, moved = _plan(checked, checked.tokenizer, store, held)
    if checked.tokenizer is None and (todo.height or moved or validation.errors_by_row()):
        tokenizer = load_tokenizer(cfg.load.base_config or model_spec.base)  # work to do: the prompts' token counts
        validation, plan, defaults, todo, moved = _plan(checked, tokenizer, store, held)
    already_done = plan.height - todo.height
    units = Units(todo, defaults)
    units = units.subset(rank_shard(range(len(units)), ranks.rank, ranks.world))
    failures = _failure_records(df, validation)
    failed_so_far = FailedSoFar(store)
    if ranks.is_main:
        store.append(failures + moved)  # moved: finished images whose row number changed, re-recorded

    task = progress.add_task("generating", total=units.total, unit="images") if progress else None

    def on_done(uid: int, error: str | None) -> None:
        if error is not None:  # the unit never ran: its rows fail with the reason
            store.append([{"id": j.row.id, "k": j.k, "row": j.row.index, "seed": j.seed, "status": "failed",
                           "error": error, "prompt": j.row.prompt, "finished_at": time.time()}
                          for j in units[uid]])
        if progress:
            progress.update(task, advance=units.size(uid), detail=f"{failed_so_far.count()} failed")

    engine = cfg.engine
    distributor = pick_engine(engine.engine, devices, ranks.world, engine.ray_address, engine.ray_cpus)
    stats = {"analyses": 0, "model_seconds": 0.0, "workers": 0}
    interrupted = 0
    if len(units):
        try:
            stats = distributor(units, partial(_make_worker, cfg, model_spec), devices, on_done)
        except KeyboardInterrupt as exc:
            if ranks.world > 1:  # the launcher stops every rank; rank 0 cannot merge alone
                raise
            # finished units are in their shards: merge them and write the record, then stop
            interrupted = getattr(exc, "signum", signal.SIGINT)
    ranks.write_stats(out, stats)
    ranks.wait_for_everyone()
    if not ranks.is_main:
        return RunSummary(total=0, ok=0, failed=0, skipped=0, analyses=stats["analyses"],
                          seconds=time.perf_counter() - start)

    failed_keys = pl.DataFrame([{c: r[c] for c in KEY} for r in failures],
                               schema={"id": pl.String, "k": pl.Int64, "row": pl.Int64})
    merged = store.merge(pl.concat([plan.select(KEY), failed_keys]))
    counts = {s: merged.filter(merged["status"] == s).height for s in ("ok", "failed")}
    all_stats = ranks.read_stats(out)
    summary = RunSummary(total=merged.height, ok=counts["ok"], failed=counts["failed"],
                         skipped=already_done, analyses=sum(s["analyses"] for s in all_stats),
                         seconds=time.perf_counter() - start, interrupted=int(interrupted))
    # the workers report their face models; a run with nothing left to do keeps what the earlier
    # run recorded (it made the images); with no earlier run (every row invalid) no face model is
    # loaded just to name it: the record says so
    identities = [s.pop("face_identity", None) for s in all_stats]
    earlier = read_run_json(out).get("face_identity")
    if not (isinstance(earlier, dict) and earlier.get("backend") == cfg.source.face_backend):
        earlier = None
    face_identity = next((i for i in identities if i), None) or earlier
    if face_identity is None:
        face_identity = {"backend": cfg.source.face_backend, "loaded": False}
    write_run_json(out, cfg=cfg.flat(), model_identity=model_identity, base=base, adapter=adapter_path,
                   face_identity=face_identity, summary=asdict(summary),
                   timings={"wall_seconds": summary.seconds, "ranks": all_stats, "devices": devices,
                            "world_size": ranks.world},
                   validation=[asdict(p) for p in validation.problems], started=started_at,
                   made=summary.ok - summary.skipped)
    return summary
