"""How work units reach devices: engines are plain functions with one signature (img2dataset's
distributors): `engine(units, make_worker, devices, on_done) -> counters`, picked by name
(`--engine`, `pick_engine`).

`inline` runs units in this process; `processes` starts one worker process per device, all
pulling from one queue (a slower device simply takes fewer units) and re-queues the unit of a
worker that dies; `torchrun` is a rank under a launcher (`accelerate launch` / torchrun / srun),
`rank_shard` giving each rank a deterministic share; `ray` (ray_engine.py) runs the units on an
actor pool of a Ray cluster.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Callable
from functools import partial

from ..errors import UsageError

MAX_ATTEMPTS = 2  # a unit that kills two workers is failed, not retried forever
ENGINES = ("inline", "processes", "torchrun", "ray")


def pick_engine(name: str | None, devices: list[str], world: int, ray_address: str | None = None,
                ray_cpus: float = 1.0) -> Callable:
    """The engine function for `--engine name` (None: torchrun under a launcher, else inline for one
    device, processes for several). UsageError for an unknown name, for `torchrun` outside a
    launcher, and for `ray` when Ray is not installed."""
    if name is None:
        name = "torchrun" if world > 1 else ("processes" if len(devices) > 1 else "inline")
    if name not in ENGINES:
        raise UsageError(f"--engine {name!r}: use one of {', '.join(ENGINES)}")
    if name == "torchrun" and world <= 1:
        raise UsageError("--engine torchrun: start fmu under torchrun (or accelerate launch / srun with RANK "
                         "and WORLD_SIZE set); this process is not one of several ranks")
    if name == "ray":
        try:
            from .ray_engine import ray_distributor  # deferred: Ray is an optional extra, heavy to import
        except ImportError:
            raise UsageError('--engine ray needs Ray: pip install "fmu[ray]" (ray[data])') from None
        return partial(ray_distributor, address=ray_address, actor_cpus=ray_cpus)
    return {"inline": inline_distributor, "processes": multiprocess_distributor,
            "torchrun": torchrun_distributor}[name]


def pick_merging_engine(name: str, command: str, devices: list[str], ray_address: str | None = None,
                        ray_cpus: float = 1.0) -> Callable:
    """The engine for a command that merges every row's result in one process at the end (`fmu
    prepare`, `fmu score`): inline, processes or ray. torchrun ranks each finish their own share,
    which such a command cannot merge: a usage error."""
    if name == "torchrun":
        raise UsageError(f"--engine torchrun: {command} runs on this machine's processes or on a Ray cluster; "
                         "use --engine processes or --engine ray")
    return pick_engine(name, devices, world=1, ray_address=ray_address, ray_cpus=ray_cpus)


def rank_shard(indices, rank: int, world: int) -> list:
    """This rank's share of the unit indices: every world-th, starting at its rank."""
    return list(indices)[rank::world]


def inline_distributor(units: list, make_worker: Callable, devices: list[str], on_done: Callable) -> dict:
    """`on_done(unit_id, error)`: error is None when the unit's shard is written, else why the unit
    could not run (the caller records its rows as failed). Every engine has this signature and
    returns the run's counters: analyses, model_seconds, workers, requeued, face_identity."""
    worker = make_worker(devices[0])
    work = ((uid, units[uid]) for uid in range(len(units)))
    worker.run(work, on_done=lambda uid, recs: on_done(uid, None))
    return {**worker.stats(), "workers": 1, "requeued": 0}


def torchrun_distributor(units: list, make_worker: Callable, devices: list[str], on_done: Callable) -> dict:
    """Under a launcher (torchrun / accelerate launch / srun setting RANK and WORLD_SIZE): `units`
    is already this rank's share (`rank_shard`); this rank's devices run it like the local engines."""
    local = multiprocess_distributor if len(devices) > 1 else inline_distributor
    return local(units, make_worker, devices, on_done)


def _worker_main(wid: int, device: str, make_worker: Callable, units: list, tasks, results) -> None:
    # Ctrl-C reaches the whole process group: the parent decides (it stops the workers and
    # writes the run record), so a worker does not die mid-unit with a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker = make_worker(device)
    except BaseException as exc:  # report, then die: the parent sees the process end
        results.put(("error", wid, None, f"{type(exc).__name__}: {exc}"))
        raise

    def pull():
        while True:
            uid = tasks.get()
            if uid is None:
                return
            results.put(("start", wid, uid, None))
            yield uid, units[uid]

    worker.run(pull(), on_done=lambda uid, recs: results.put(("done", wid, uid, len(recs))))
    results.put(("stats", wid, None, worker.stats()))


def multiprocess_distributor(units: list, make_worker: Callable, devices: list[str], on_done: Callable) -> dict:
    ctx = mp.get_context("spawn")  # CUDA and forked torch do not mix
    tasks, results = ctx.Queue(), _Messages(ctx)
    for uid in range(len(units)):
        tasks.put(uid)
    procs = {}
    for wid, device in enumerate(devices):
        p = ctx.Process(target=_worker_main, args=(wid, device, make_worker, units, tasks, results),
                        name=f"fmu-worker-{wid}", daemon=True)
        p.start()
        procs[wid] = p
    try:
        return _supervise(units, procs, tasks, results, on_done, len(devices))
    except BaseException:  # interrupted: stop the workers; finished units are in their shards
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.join(timeout=10)
        raise


def _supervise(units: list, procs: dict, tasks, results, on_done: Callable, n_workers: int) -> dict:
    """Route worker messages until every unit is done or given up; re-queue a dead worker's unit."""
    attempts = [0] * len(units)
    started: dict[int, int] = {}     # unit -> worker that is on it
    settled: set[int] = set()        # done, or given up
    stats = {"analyses": 0, "model_seconds": 0.0, "workers": n_workers, "requeued": 0,
             "gave_up": [], "errors": []}
    stopping = False
    while True:
        kind, wid, uid, payload = results.get(timeout=0.2)
        if kind == "start":
            attempts[uid] += 1
            started[uid] = wid
        elif kind == "done":
            started.pop(uid, None)
            settled.add(uid)
            on_done(uid, None)
        elif kind == "stats":
            stats["analyses"] += payload["analyses"]
            stats["model_seconds"] += payload["model_seconds"]
            stats["face_identity"] = payload["face_identity"]
        elif kind == "error":
            stats["errors"].append(payload)
        if kind is not None:
            continue  # drain messages before judging who is alive
        for wid, p in list(procs.items()):
            if not p.is_alive():
                procs.pop(wid)
                for lost in [u for u, w in started.items() if w == wid]:
                    started.pop(lost)
                    if attempts[lost] >= MAX_ATTEMPTS:
                        settled.add(lost)
                        stats["gave_up"].append(lost)
                        on_done(lost, f"worker_died: a worker died {attempts[lost]} times on this unit")
                    else:
                        tasks.put(lost)
                        stats["requeued"] += 1
        if len(settled) >= len(units) and not stopping:
            for _ in procs:
                tasks.put(None)
            stopping = True
        if not procs:
            for uid in range(len(units)):
                if uid not in settled:
                    settled.add(uid)
                    stats["gave_up"].append(uid)
                    on_done(uid, "worker_died: no worker left to run this unit "
                                 + (stats["errors"][-1].splitlines()[-1] if stats["errors"] else ""))
            break
    return stats



class _Messages:
    """Worker -> parent messages on a pipe. `put` has written the message when it returns: a
    multiprocessing.Queue hands it to a feeder thread, and a worker killed right after (OOM,
    segfault) takes its last "start"/"done" along, so its unit would never be re-queued or settled
    and the run would wait forever. (SimpleQueue writes at once too, but cannot wait with a timeout.)"""

    def __init__(self, ctx):
        self.reader, self.writer = ctx.Pipe(duplex=False)
        self.lock = ctx.Lock()  # one writer at a time: messages from two workers never interleave

    def put(self, message: tuple) -> None:
        with self.lock:
            self.writer.send(message)

    def get(self, timeout: float) -> tuple:
        """The next message, or (None,) * 4 when none came within `timeout` seconds."""
        return self.reader.recv() if self.reader.poll(timeout) else (None, None, None, None)
