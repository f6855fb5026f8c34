"""The output folder belongs to one run at a time, and nothing in it is lost between runs.

- Two `fmu generate` runs on one --out: the second is refused while the first holds the folder's
  lock; every image the successful run asked for is in its results.parquet.
- A merge deletes only the shards it read; temp files a killed write left behind are removed.
- Resume matches finished images by id: a row inserted or removed above them redoes nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from cli_run import generate as run

from fmu.core.errors import UsageError
from fmu.core.out_lock import locked_output

REPO = Path(__file__).resolve().parents[1]
FAST = ["--steps", "1", "--batch-size", "2", "--no-shading"]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture
def refs(tmp_path, photos):
    for name in ("astronaut.png", "tom_hanks.png"):
        shutil.copy(photos[name], tmp_path / name)
    return tmp_path


def manifest(folder: Path, name: str, ids: list[str]) -> Path:
    path = folder / name
    pl.DataFrame({"id": ids, "reference": ["tom_hanks.png"] * len(ids),
                  "prompt": [f"a photo number {i}" for i in range(len(ids))]}).write_csv(path)
    return path


def test_two_concurrent_runs_on_one_out_lose_nothing(refs, tiny_preset, fmu_home):
    out = refs / "out"
    first_ids, second_ids = [f"a{i}" for i in range(5)], [f"b{i}" for i in range(3)]
    args = ["--out", out, "--steps", "2", "--batch-size", "1", "--no-shading"]
    first = subprocess.Popen([sys.executable, "-m", "fmu.app", "generate",
                              manifest(refs, "m1.csv", first_ids), *map(str, args)],
                             env=env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while f"pid {first.pid}" not in ((out / ".lock").read_text() if (out / ".lock").exists() else ""):
        assert first.poll() is None, first.communicate()[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    # the first run holds the folder: keep it there (stopped) while the second one starts, however
    # fast this machine, then let it finish
    first.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.run([sys.executable, "-m", "fmu.app", "generate",
                                 manifest(refs, "m2.csv", second_ids), *map(str, args)],
                                env=env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-2000:]
    assert second.returncode == 2, second.stderr[-2000:]
    assert second.stderr.strip().splitlines() == [
        f"error: {out} is in use by another fmu run (pid {first.pid}, fmu generate); wait for it to finish "
        "or give another --out"]
    assert second.stdout == ""  # refused before any progress bar
    # the run that reported success has every image it asked for, and the refused one wrote nothing
    df = pl.read_parquet(out / "results.parquet")
    assert sorted(df["id"]) == first_ids and set(df["status"]) == {"ok"}
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i}_0.png" for i in first_ids]
    assert not list((out / ".shards").glob("*.parquet"))


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom core.out_lock import locked_output\n"
                               f"with locked_output({str(tmp_path / 'out')!r}, 'test'):\n"
                               "    print('held', flush=True)\n    time.sleep(600)\n"],
                              env=env(), cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UsageError, match=f"pid {holder.pid}, fmu test"), locked_output(tmp_path / "out", "generate"):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with locked_output(tmp_path / "out", "generate"):  # no stale lock to remove by hand
        assert f"pid {os.getpid()}, fmu generate" in (tmp_path / "out" / ".lock").read_text()


def test_stale_temp_files_of_killed_writes_are_removed(refs, tiny_preset):
    """A kill during the merge leaves `.results.parquet.<hex>.tmp`; one during an image write a
    hidden temp image. The next run on the folder (holding its lock) removes them, and only them."""
    out = refs / "out"
    planted = [out / ".results.parquet.0123456789ab.tmp", out / ".shards" / ".1-ab.parquet.0123456789ab.tmp",
               out / "images" / ".r0_0.png.fedcba987654.tmp", out / "conditions" / ".r0.png.aaaaaaaaaaaa.tmp"]
    kept = [out / "images" / "notes.tmp", out / "mine.0123456789ab.tmp"]  # not the atomic writer's names
    for path in planted + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    result = run([manifest(refs, "m.csv", ["r0"]), "--out", out, *FAST])
    assert result.exit_code == 0, result.output
    assert [p for p in planted if p.exists()] == []
    assert all(p.exists() for p in kept)
    assert pl.read_parquet(out / "results.parquet")["id"].to_list() == ["r0"]


def test_a_merge_deletes_only_the_shards_it_read(tmp_path, monkeypatch):
    from fmu.core.runner.results import ResultStore

    store = ResultStore(tmp_path / "out")
    store.append([{"id": "a", "k": 0, "row": 0, "status": "ok"}])
    real = ResultStore._latest

    def latest_then_a_shard_arrives(self):
        found = real(self)
        store.append([{"id": "b", "k": 0, "row": 1, "status": "ok"}])  # written after the merge read
        return found

    monkeypatch.setattr(ResultStore, "_latest", latest_then_a_shard_arrives)
    merged = store.merge(pl.DataFrame({"id": ["a", "b"], "k": [0, 0], "row": [0, 1]}))
    assert merged["id"].to_list() == ["a"]
    monkeypatch.setattr(ResultStore, "_latest", real)
    left = list((tmp_path / "out" / ".shards").glob("*.parquet"))
    assert len(left) == 1 and pl.read_parquet(left[0])["id"].to_list() == ["b"]  # kept for the next merge
    assert store.merge(pl.DataFrame({"id": ["a", "b"], "k": [0, 0], "row": [0, 1]}))["id"].to_list() == ["a", "b"]


def test_rows_inserted_or_removed_above_keep_the_finished_images(refs, tiny_preset):
    prompts = {"a": "a photo", "b": "a painting", "c": "a drawing", "n": "a new row"}
    m = refs / "m.csv"

    def write(ids):
        pl.DataFrame({"id": ids, "reference": ["tom_hanks.png"] * len(ids), "prompt": [prompts[i] for i in ids],
                      "seed": [ord(i) for i in ids]}).write_csv(m)

    out = refs / "out"
    write(["a", "b", "c"])
    assert run([m, "--out", out, *FAST]).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    write(["n", "a", "c"])  # a row inserted at the top, b removed: a and c move
    again = run([m, "--out", out, *FAST])
    assert again.exit_code == 0 and "3 ok, 0 failed, 2 of them finished earlier" in " ".join(again.output.split())
    after = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert after["a_0.png"] == before["a_0.png"] and after["c_0.png"] == before["c_0.png"]  # not redone
    df = pl.read_parquet(out / "results.parquet")
    assert list(zip(df["id"], df["row"])) == [("n", 0), ("a", 1), ("c", 2)]  # recorded at their new rows
    assert df["image"].to_list() == ["images/n_0.png", "images/a_0.png", "images/c_0.png"]
    # rows without ids are named by their row number: moving them makes new images
    pl.DataFrame({"reference": ["tom_hanks.png"] * 2, "prompt": ["x", "y"], "seed": [1, 2]}).write_csv(m)
    assert run([m, "--out", refs / "out2", *FAST]).exit_code == 0
    pl.DataFrame({"reference": ["tom_hanks.png"] * 3, "prompt": ["w", "x", "y"], "seed": [0, 1, 2]}).write_csv(m)
    third = run([m, "--out", refs / "out2", *FAST])
    assert "3 ok, 0 failed (" in " ".join(third.output.split())  # none kept: row000000.. now name others
