"""`--engine ray`: the work units on an actor pool of a Ray cluster (Ray Data).

The plan's units (a batch each, rows sharing settings and reference grouped as the planner
groups them, so a reference is analysed once per unit) become a Ray Dataset of unit numbers;
`map_batches` hands them, one unit per call, to a pool of callable actors that each hold one
loaded model (one GPU each, `num_gpus=1`; on a CPU-only cluster `--ray-cpus` CPUs each). The
actor is the same Worker the local engines run: it writes each unit's images (writer stage) and
result shard into `--out` as it finishes, so `--out` must be one shared filesystem path on every
node, and a crash loses at most the units in flight. A killed actor is restarted and its unit
retried by Ray (a unit recorded twice keeps its newest record at the merge); units Ray gives up
on are recorded failed, so the exit status stays honest, and a re-run redoes what is missing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import ray
import ray.data

from ..errors import first_line

# what the actors need from the driver's environment (model home, offline switches)
PASSED_ENV = ("FMU_HOME", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "TORCH_HOME")
WORKER_NICENESS = "RAY_worker_niceness"  # Ray's spelling: its RayConfig entry worker_niceness
LOCAL_CPUS = 4  # a local instance's logical CPUs at least: Ray Data's read stage needs CPUs beside the actors


class UnitActor:
    """One model, loaded once; called with a batch of unit numbers, returns the units finished."""

    def __init__(self, make_worker: Callable, units, device: str, cwd: str):
        if os.path.isdir(cwd):  # relative paths (--out, model folders) mean what they meant to the driver
            os.chdir(cwd)
        self.worker = make_worker(device)
        self.units = units

    def __call__(self, batch: dict) -> dict:
        finished: list[int] = []
        work = ((int(uid), self.units[int(uid)]) for uid in batch["unit"])
        self.worker.run(work, on_done=lambda uid, records: finished.append(uid))
        stats = self.worker.stats()
        n = len(finished)
        return {"unit": finished, "worker": [self.worker.name] * n, "analyses": [stats["analyses"]] * n,
                "model_seconds": [stats["model_seconds"]] * n,
                "face_identity": [json.dumps(stats["face_identity"])] * n}


def ray_distributor(units, make_worker: Callable, devices: list[str], on_done: Callable,
                    address: str | None = None, actor_cpus: float = 1.0) -> dict:
    """The engine signature (distribute.py) plus where the cluster is. Connects (or starts a
    local instance), runs every unit, reports each as its row comes back, and disconnects when it
    connected."""
    started = _connect(address)
    try:
        return _run(units, make_worker, devices, on_done, actor_cpus)
    finally:
        if started:
            ray.shutdown()


def _connect(address: str | None) -> bool:
    """ray.init unless this process is connected already; True when it connected here. No
    address: `auto` (the cluster RAY_ADDRESS names) when RAY_ADDRESS is set, else a new local
    instance (never an older cluster that /tmp/ray remembers: it may be dead)."""
    if ray.is_initialized():
        return False
    if address is None:
        address = "auto" if os.environ.get("RAY_ADDRESS") else "local"
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    if address != "local":
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        return True
    # A local instance is this run's own: its actors run at this process's priority, as the processes
    # engine's workers do. Ray starts workers at niceness 15 (its raylets read RAY_worker_niceness when
    # they start), which on a small busy machine left the actors a few % of a core (bench/generate_scale.py).
    saved = os.environ.get(WORKER_NICENESS)
    os.environ.setdefault(WORKER_NICENESS, "0")
    try:
        ray.init(address="local", runtime_env={"env_vars": env}, log_to_driver=False,
                 num_cpus=max(LOCAL_CPUS, os.cpu_count() or 1))
    finally:
        if saved is None:
            os.environ.pop(WORKER_NICENESS, None)
    return True


def _run(units, make_worker: Callable, devices: list[str], on_done: Callable, actor_cpus: float) -> dict:
    ray.data.DataContext.get_current().enable_progress_bars = False  # fmu draws its own bar
    gpu = devices[0].split(":")[0] == "cuda"
    resources = {"num_gpus": 1} if gpu else {"num_cpus": actor_cpus}
    pool = int(ray.cluster_resources().get("GPU", 1)) if gpu else len(devices)
    ds = ray.data.from_items([{"unit": uid} for uid in range(len(units))], override_num_blocks=len(units))
    # the pool may shrink to one actor (a node gone for good) and the run still ends
    size = max(1, min(pool, len(units)))
    compute = ray.data.ActorPoolStrategy(min_size=1, max_size=size, initial_size=size)
    ds = ds.map_batches(UnitActor, batch_size=1, compute=compute, **resources,
                        fn_constructor_kwargs={"make_worker": make_worker, "units": units,
                                               "device": "cuda" if gpu else "cpu", "cwd": os.getcwd()})
    # Ray Data's actor pool restarts a dead actor and retries its task by default (max_restarts=-1)
    settled: set[int] = set()
    per_worker: dict[str, dict] = {}
    error = None
    try:
        for row in ds.iter_rows():
            per_worker[row["worker"]] = row
            if row["unit"] not in settled:
                settled.add(row["unit"])
                on_done(row["unit"], None)
    except Exception as exc:  # noqa: BLE001  Ray gave up (no actor could start, retries spent): rows fail
        error = f"worker_died: the Ray run stopped: {first_line(exc)}"
    for uid in range(len(units)):
        if uid not in settled:
            on_done(uid, error or "worker_died: Ray returned no result for this unit")
    stats = {"analyses": sum(r["analyses"] for r in per_worker.values()),
             "model_seconds": sum(r["model_seconds"] for r in per_worker.values()),
             "workers": len(per_worker), "requeued": 0}
    if per_worker:
        stats["face_identity"] = json.loads(next(iter(per_worker.values()))["face_identity"])
    return stats
