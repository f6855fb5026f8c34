"""Scale-out: several worker processes, a real 2-process launch, a worker killed mid-run."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import polars as pl
import psutil
import pytest
from PIL import Image
from typer.testing import CliRunner

from fmu.app import app

# CPU results depend on the intra-op thread count; torchrun defaults it to 1, so pin it everywhere
ARGS = ["--steps", "3", "--batch-size", "2", "--no-shading", "--threads", "2"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("scale")
    for name in ("astronaut.png", "tom_hanks.png", "t1.jpg"):
        shutil.copy(photos[name], folder / name)
    refs = ["astronaut.png", "tom_hanks.png", "t1.jpg"]
    n = 12
    pl.DataFrame({"id": [f"r{i:02d}" for i in range(n)], "reference": [refs[i % 3] for i in range(n)],
                  "prompt": [f"a photo of a person, variant {i % 4}" for i in range(n)],
                  "seed": list(range(100, 100 + n))}).write_csv(folder / "m.csv")
    return folder / "m.csv"


@pytest.fixture(scope="module")
def single(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    res = CliRunner().invoke(app, ["generate", str(manifest), "--out", str(out), *ARGS])
    assert res.exit_code == 0, res.output
    return out


def _images(out):
    return {p.name: np.asarray(Image.open(p)) for p in sorted((out / "images").glob("*.png"))}


def _assert_same_images(a, b):
    ia, ib = _images(a), _images(b)
    assert sorted(ia) == sorted(ib) and len(ia) == 12
    for name in ia:
        np.testing.assert_array_equal(ia[name], ib[name], err_msg=name)


def _env(fmu_home):
    env = {**os.environ, "FMU_HOME": str(fmu_home)}
    env.pop("WORLD_SIZE", None)
    return env


def test_two_cpu_workers_give_the_same_images(manifest, single, tmp_path, fmu_home):
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "fmu.app", "generate", str(manifest), "--out", str(out), *ARGS,
           "--devices", "cpu,cpu"]
    proc = subprocess.run(cmd, env=_env(fmu_home), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_same_images(single, out)
    df = pl.read_parquet(out / "results.parquet")
    assert df.height == 12 and set(df["status"]) == {"ok"}
    assert df["worker"].n_unique() == 2, "both worker processes should have taken units"


def test_torchrun_two_processes_share_the_work(manifest, single, tmp_path, fmu_home):
    out = tmp_path / "ranks"
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "fmu.app", "generate", str(manifest),
           "--out", str(out), *ARGS]
    proc = subprocess.run(cmd, env=_env(fmu_home), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_same_images(single, out)
    df = pl.read_parquet(out / "results.parquet")
    assert df.height == 12 and df.select("id", "k").is_unique().all()
    ranks = {w.split(":")[0] for w in df["worker"]}
    assert ranks == {"rank0", "rank1"}
    import json

    info = json.loads((out / "run.json").read_text())
    assert info["timings"]["world_size"] == 2
    assert sorted(s["rank"] for s in info["timings"]["ranks"]) == [0, 1]


def test_torchrun_ranks_write_one_webdataset(manifest, single, tmp_path, fmu_home):
    """A dataset writer under torchrun: each rank writes its own shards; together they hold every
    row once, with the single process's pixels."""
    wds = pytest.importorskip("webdataset")
    out = tmp_path / "ranks-wds"
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "fmu.app", "generate", str(manifest),
           "--out", str(out), *ARGS, "--writer", "webdataset", "--shard-size", "4"]
    proc = subprocess.run(cmd, env=_env(fmu_home), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    df = pl.read_parquet(out / "results.parquet")
    assert df.height == 12 and set(df["status"]) == {"ok"} and {w.split(":")[0] for w in df["worker"]} == {
        "rank0", "rank1"}
    shards = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    samples = {s["__key__"]: s for s in wds.WebDataset(shards, shardshuffle=False).decode("rgb8")}
    assert sorted(samples) == sorted(i.split("#")[1] for i in df["image"])
    expected = _images(single)
    for row in df.iter_rows(named=True):
        np.testing.assert_array_equal(samples[row["image"].split("#")[1]]["png"],
                                      expected[f"{row['id']}_{row['k']}.png"])


def _is_worker(child: psutil.Process) -> bool:
    """A spawned worker process; a child that exits while it is looked at (a short-lived helper the
    libraries start, now a zombie or gone) is not one."""
    try:
        return "--multiprocessing-fork" in child.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def _signal(child: psutil.Process, signum) -> bool:
    """Send it; False when the process is already gone."""
    try:
        child.send_signal(signum)
        return True
    except psutil.NoSuchProcess:
        return False


def test_killing_a_worker_loses_no_row(manifest, tmp_path, fmu_home):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fmu.app", "generate", str(manifest), "--out", str(out),
           "--steps", "12", "--batch-size", "1", "--no-shading", "--devices", "cpu,cpu"]
    proc = subprocess.Popen(cmd, env=_env(fmu_home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killed = []

    def kill_one_worker():
        """Waits on a file, not on a time: the first result shard shows that the workers really run
        (model loaded, units flowing). At that moment every worker is frozen (SIGSTOP), so however
        loaded the machine, none can finish the remaining units before one of them is killed; the
        others go on (SIGCONT)."""
        while proc.poll() is None and not killed:
            if any((out / ".shards").glob("*.parquet")) if (out / ".shards").exists() else False:
                # workers, not multiprocessing's resource tracker (whose command line also says so)
                kids = [c for c in psutil.Process(proc.pid).children(recursive=True) if _is_worker(c)]
                frozen = [kid for kid in kids if _signal(kid, signal.SIGSTOP)]
                if frozen and _signal(frozen[0], signal.SIGKILL):
                    killed.append(frozen[0].pid)
                for kid in frozen[1:]:
                    _signal(kid, signal.SIGCONT)
            time.sleep(0.02)   # the poll interval for the file, not a stand-in for an event

    t = threading.Thread(target=kill_one_worker)
    t.start()
    output, _ = proc.communicate(timeout=600)
    t.join()
    assert killed, "no worker was killed"
    assert proc.returncode == 0, output.decode()[-3000:]
    df = pl.read_parquet(out / "results.parquet")
    assert sorted(df["id"]) == [f"r{i:02d}" for i in range(12)]
    assert set(df["status"]) == {"ok"} and df.select("id", "k").is_unique().all()
    assert len(list((out / "images").glob("*.png"))) == 12
    import json

    ranks = json.loads((out / "run.json").read_text())["timings"]["ranks"]
    assert ranks[0]["requeued"] >= 1 and not ranks[0]["gave_up"]  # the dead worker's unit ran elsewhere
