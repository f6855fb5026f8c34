"""`--engine ray` without a cluster starts a local Ray instance of its own; its actors run at the
driver's priority (Ray's default niceness 15 left them a few % of a core on a busy machine). Run in
a child process: the Ray test cluster of test_ray_engine.py is not involved."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("ray")

CHILD = r'''
import json, os, sys
from fmu.core.runner.ray_engine import ray_distributor

class Probe:
    """A worker that reports the niceness it runs at."""
    def __init__(self, device):
        self.name = "probe"
    def run(self, work, on_done):
        for uid, unit in work:
            on_done(uid, [])
    def stats(self):
        return {"analyses": os.nice(0), "model_seconds": 0.0, "face_identity": None}

done = []
counters = ray_distributor([[0], [1]], Probe, ["cpu"], lambda uid, error: done.append((uid, error)))
print(json.dumps({"done": sorted(done), "nice": counters["analyses"], "env": os.environ.get(sys.argv[1])}))
'''


def test_a_local_instance_runs_its_actors_at_the_drivers_priority(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_worker_niceness")}
    res = subprocess.run([sys.executable, "-c", CHILD, "RAY_worker_niceness"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["done"] == [[0, None], [1, None]]
    assert got["nice"] == os.nice(0)  # the actor's niceness: this process's, not Ray's 15
    assert got["env"] is None         # the driver's environment is left as it was
