"""Disk full and permission denied on the output folder, in-process.

Tests run as root, where chmod does not block writes, and no small tmpfs can be mounted here; so
the kernel's answers are injected at the system-call layer fmu's writes go through: `os.open`
raising EACCES (a read-only folder) and `os.fsync` raising ENOSPC / EIO (a full or failing disk,
which is where a buffered write reports it). Every fmu output file goes through
`core.images.atomic_write_bytes`, so these exercise the real write, clean-up and resume paths.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from fmu.app import app

FAST = ["--steps", "1", "--no-shading", "--batch-size", "1"]
N = 3


class Disk:
    """Fault injector for files created under `root`: `deny` makes creating files in the given
    folders fail with EACCES; `full_after` lets that many fsyncs succeed, then every one fails with
    ENOSPC until `space_returns()`; `fail_once` fails the first fsync of a file whose name matches."""

    def __init__(self, monkeypatch, root: Path):
        self.root = str(Path(root).resolve())
        self.deny: list[str] = []
        self.full_after: int | None = None
        self.fail_once: dict[str, int] = {}   # name fragment -> errno
        self.writes = 0
        self.refused = 0
        real_open, real_fsync = os.open, os.fsync

        def fake_open(path, flags, mode=0o777, *args, **kw):
            p = os.path.abspath(os.fspath(path))
            if flags & os.O_CREAT and any(os.path.dirname(p) == d for d in self.deny):
                self.refused += 1
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            return real_open(path, flags, mode, *args, **kw)

        def fake_fsync(fd):
            try:
                p = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                p = ""
            if p.startswith(self.root):
                for fragment, code in list(self.fail_once.items()):
                    if fragment in os.path.basename(p):
                        del self.fail_once[fragment]
                        self.refused += 1
                        raise OSError(code, os.strerror(code))
                if self.full_after is not None and self.writes >= self.full_after:
                    self.refused += 1
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.writes += 1
            return real_fsync(fd)

        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(os, "fsync", fake_fsync)

    def space_returns(self) -> None:
        self.full_after, self.deny, self.fail_once = None, [], {}


@pytest.fixture(scope="module", autouse=True)
def one_model_load():
    """Load the tiny model once for the module's many short runs (the runs are the subject here)."""
    from fmu.core.model.facemakeup import FaceMakeUp

    descriptor, real, cache = FaceMakeUp.__dict__["from_pretrained"], FaceMakeUp.from_pretrained, {}

    def cached(cls, *args, **kw):
        key = repr((args, sorted(kw.items())))
        if key not in cache:
            cache[key] = real(*args, **kw)
        return cache[key]

    FaceMakeUp.from_pretrained = classmethod(cached)
    yield
    FaceMakeUp.from_pretrained = descriptor


@pytest.fixture()
def job(tmp_path, photos, tiny_preset):
    shutil.copyfile(photos["tom_hanks.png"], tmp_path / "hanks.png")
    pl.DataFrame({"id": [f"r{i}" for i in range(N)], "reference": ["hanks.png"] * N,
                  "prompt": [f"a photo number {i}" for i in range(N)]}).write_csv(tmp_path / "m.csv")
    return tmp_path / "m.csv", tmp_path / "out"


def generate(manifest, out):
    return CliRunner().invoke(app, ["generate", str(manifest), "--out", str(out), *FAST])


def statuses(out: Path) -> dict[str, tuple[str, str | None]]:
    df = pl.read_parquet(out / "results.parquet")
    assert df.select("id", "k").is_unique().all()
    return {rid: (st, err) for rid, st, err in df.select("id", "status", "error").iter_rows()}


def no_temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*.tmp")]


def mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}


def assert_complete(out: Path) -> None:
    df = pl.read_parquet(out / "results.parquet")
    assert sorted(df["id"]) == [f"r{i}" for i in range(N)] and set(df["status"]) == {"ok"}
    assert sorted(mtimes(out)) == [f"r{i}_0.png" for i in range(N)]
    for p in (out / "images").glob("*.png"):
        assert np.asarray(Image.open(p)).shape == (64, 64, 3)
    assert not no_temp_files(out)


def test_read_only_images_folder_fails_each_row_clearly_then_resumes(job, monkeypatch):
    manifest, out = job
    (out / "images").mkdir(parents=True)
    disk = Disk(monkeypatch, out)
    disk.deny = [str((out / "images").resolve())]
    result = generate(manifest, out)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    got = statuses(out)
    assert set(got) == {f"r{i}" for i in range(N)}
    for rid, (status, error) in got.items():
        assert status == "failed"
        assert error == f"write_failed: cannot write {out / 'images' / (rid + '_0.png')}: Permission denied"
    assert disk.refused == N and not list((out / "images").iterdir()) and not no_temp_files(out)
    assert (out / "run.json").is_file()

    disk.space_returns()  # permissions fixed: the same command finishes the job
    assert generate(manifest, out).exit_code == 0
    assert_complete(out)


def test_disk_fills_mid_run_keeps_finished_rows_and_resumes(job, monkeypatch):
    manifest, out = job
    disk = Disk(monkeypatch, out)
    # writes per unit here: face cache (first unit only), image, shard -> 2 units fit in 5
    disk.full_after = 5
    result = generate(manifest, out)
    assert result.exit_code != 0
    exc = result.exception
    message = " ".join(result.output.split()) + (str(exc) if exc else "")
    # a loud run-level error naming the cause (today an OSError escapes `fmu generate`; the CLI
    # should print it as one line - either way the run does not end quietly)
    assert "No space left on device" in message, message
    assert isinstance(exc, (OSError, SystemExit)), exc
    # what finished before the disk filled is on disk, recorded, readable; nothing half-written
    shards = sorted((out / ".shards").glob("*.parquet"))
    assert len(shards) == 2
    done = pl.concat([pl.read_parquet(p) for p in shards])
    assert sorted(done["id"]) == ["r0", "r1"] and set(done["status"]) == {"ok"}
    assert sorted(mtimes(out)) == ["r0_0.png", "r1_0.png"]
    assert not no_temp_files(out)
    before = mtimes(out)

    disk.space_returns()
    assert generate(manifest, out).exit_code == 0
    assert_complete(out)
    after = mtimes(out)
    assert {k: after[k] for k in before} == before  # finished images kept, not redone


def test_one_failing_image_write_fails_only_that_row(job, monkeypatch):
    manifest, out = job
    disk = Disk(monkeypatch, out)
    disk.fail_once = {".r1_0.png.": errno.EIO}
    result = generate(manifest, out)
    assert result.exit_code == 1, result.output
    got = statuses(out)
    assert got["r1"] == ("failed", f"write_failed: cannot write {out / 'images' / 'r1_0.png'}: Input/output error")
    assert {r: s for r, (s, _) in got.items() if r != "r1"} == {"r0": "ok", "r2": "ok"}
    assert sorted(mtimes(out)) == ["r0_0.png", "r2_0.png"] and not no_temp_files(out)
    before = mtimes(out)
    assert generate(manifest, out).exit_code == 0  # the re-run retries exactly the failed row
    assert_complete(out)
    assert {k: v for k, v in mtimes(out).items() if k != "r1_0.png"} == before


def test_a_shard_that_cannot_be_written_is_retried_with_the_next(job, monkeypatch):
    """A failed results shard must not lose the unit's finished rows: they go out with the next."""
    manifest, out = job
    disk = Disk(monkeypatch, out)
    disk.fail_once = {".parquet.": errno.ENOSPC}  # the first shard
    result = generate(manifest, out)
    assert result.exit_code == 0, result.output
    assert disk.refused == 1
    assert_complete(out)


def test_face_cache_write_failure_fails_the_row_not_the_run(job, monkeypatch):
    manifest, out = job
    disk = Disk(monkeypatch, out)
    disk.fail_once = {".npz.": errno.ENOSPC}  # the shared reference's analysis cannot be cached
    result = generate(manifest, out)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    got = statuses(out)
    failed = {r: e for r, (s, e) in got.items() if s == "failed"}
    assert list(failed) == ["r0"]  # the first unit's row; the next analysis is cached fine
    assert failed["r0"] == "reference io_error: [Errno 28] No space left on device"
    assert generate(manifest, out).exit_code == 0
    assert_complete(out)
