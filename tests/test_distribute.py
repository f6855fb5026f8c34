"""core/runner/distribute.py on its own, with a fake worker (no model): every unit reaches exactly
one worker, a worker that dies has its unit re-queued, a unit that kills every attempt is given up
with a reason, and ranks split the units exactly."""

import functools
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from fmu.core.runner.distribute import MAX_ATTEMPTS, inline_distributor, multiprocess_distributor, rank_shard


class FakeWorker:
    """The worker interface the distributors use: `run(units, on_done)` and `stats()`. Each unit
    it finishes is written to LOG/<uid>.<pid> (the shard a real worker would write)."""

    def __init__(self, device: str, log: Path, deadly: dict[int, int]):
        self.device, self.log, self.deadly = device, log, deadly
        self.cache = SimpleNamespace(analyses=0)
        self.model = SimpleNamespace(timings=SimpleNamespace(model_seconds=0.0))

    def stats(self) -> dict:
        return {"analyses": self.cache.analyses, "model_seconds": self.model.timings.model_seconds,
                "face_identity": {"backend": "fake", "clip_crop": "aligned"}}

    def run(self, units, on_done) -> None:
        for uid, jobs in units:
            if self._dies_on(uid):
                os._exit(3)  # a crash: no exception, no clean-up, the process is gone
            (self.log / f"{uid}.{os.getpid()}").write_text(self.device)
            self.cache.analyses += len(jobs)
            self.model.timings.model_seconds += 0.5
            on_done(uid, [{"job": j} for j in jobs])

    def _dies_on(self, uid: int) -> bool:
        """Dies on its first `deadly[uid]` attempts at unit uid (attempts counted in files)."""
        if uid not in self.deadly:
            return False
        marks = self.log / f"attempts-{uid}"
        marks.mkdir(exist_ok=True)
        tried = len(list(marks.iterdir()))
        (marks / str(os.getpid())).touch()
        return tried < self.deadly[uid]


def make_fake(log: Path, deadly: dict[int, int], device: str) -> FakeWorker:
    return FakeWorker(device, log, deadly)


def broken_factory(device: str):
    raise RuntimeError(f"no model on {device}")


UNITS = [["a", "b"], ["c"], ["d", "e", "f"], ["g"], ["h", "i"], ["j"]]


@pytest.fixture(autouse=True)
def deadline():
    """A distributor that loses track of a unit waits forever: fail instead (its workers are
    stopped on the way out)."""

    def expire(signum, frame):
        raise TimeoutError("the distributor did not settle every unit within 60 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _finished(log: Path) -> dict[int, list[str]]:
    """uid -> the devices whose worker finished it."""
    done: dict[int, list[str]] = {}
    for path in log.iterdir():
        if path.is_file():
            done.setdefault(int(path.name.split(".")[0]), []).append(path.read_text())
    return done


def test_inline_runs_every_unit_in_order_on_the_first_device(tmp_path):
    calls = []
    stats = inline_distributor(UNITS, functools.partial(make_fake, tmp_path, {}), ["cpu"],
                               lambda uid, error: calls.append((uid, error)))
    assert calls == [(uid, None) for uid in range(len(UNITS))]
    assert stats["analyses"] == 10 and stats["model_seconds"] == 3.0 and stats["workers"] == 1
    assert stats["face_identity"] == {"backend": "fake", "clip_crop": "aligned"}
    assert _finished(tmp_path) == {uid: ["cpu"] for uid in range(len(UNITS))}


def test_processes_share_the_units_and_each_runs_once(tmp_path):
    calls = []
    stats = multiprocess_distributor(UNITS, functools.partial(make_fake, tmp_path, {}), ["cpu", "cpu:1"],
                                     lambda uid, error: calls.append((uid, error)))
    assert sorted(calls) == [(uid, None) for uid in range(len(UNITS))]
    finished = _finished(tmp_path)
    assert sorted(finished) == list(range(len(UNITS))) and all(len(v) == 1 for v in finished.values())
    assert stats["analyses"] == 10 and stats["model_seconds"] == pytest.approx(3.0)
    assert stats["requeued"] == 0 and stats["gave_up"] == [] and stats["workers"] == 2


def test_the_unit_of_a_dead_worker_is_requeued(tmp_path):
    calls = []
    stats = multiprocess_distributor(UNITS, functools.partial(make_fake, tmp_path, {2: 1}), ["cpu", "cpu"],
                                     lambda uid, error: calls.append((uid, error)))
    assert sorted(calls) == [(uid, None) for uid in range(len(UNITS))]
    assert stats["requeued"] == 1 and stats["gave_up"] == []
    assert len(_finished(tmp_path)[2]) == 1  # the surviving worker finished it


def test_a_unit_that_kills_every_attempt_is_given_up_with_a_reason(tmp_path):
    calls = {}
    stats = multiprocess_distributor(UNITS, functools.partial(make_fake, tmp_path, {3: 99}), ["cpu", "cpu"],
                                     lambda uid, error: calls.setdefault(uid, []).append(error))
    assert sorted(calls) == list(range(len(UNITS))) and all(len(v) == 1 for v in calls.values())
    assert calls[3] == [f"worker_died: a worker died {MAX_ATTEMPTS} times on this unit"]
    assert 3 in stats["gave_up"] and 3 not in _finished(tmp_path)
    # both workers died on unit 3: units nobody finished are reported, never silently dropped
    finished = _finished(tmp_path)
    for uid, (error,) in calls.items():
        assert (error is None) == (uid in finished), (uid, error)


def test_workers_that_cannot_start_fail_every_unit_with_their_error(tmp_path):
    calls = {}
    stats = multiprocess_distributor(UNITS[:3], broken_factory, ["cpu", "cpu"],
                                     lambda uid, error: calls.setdefault(uid, []).append(error))
    assert sorted(calls) == [0, 1, 2]
    for (error,) in calls.values():
        assert error.startswith("worker_died: no worker left to run this unit") and "no model on cpu" in error
    assert len(stats["errors"]) == 2 and sorted(stats["gave_up"]) == [0, 1, 2]


@pytest.mark.parametrize("n", [0, 1, 7, 12])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_ranks_split_the_units_exactly(n, world):
    shares = [rank_shard(range(n), rank, world) for rank in range(world)]
    assert sorted(i for share in shares for i in share) == list(range(n))  # every unit, once
    assert max(map(len, shares)) - min(map(len, shares)) <= 1               # balanced
    assert shares == [rank_shard(list(range(n)), rank, world) for rank in range(world)]  # deterministic
