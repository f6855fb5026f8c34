"""core/runner/results.py on its own: shards appended and merged, and the resume rule (`todo`):
a planned image is skipped only when a finished record matches its inputs, its image is on disk
and its reference / target still hold the bytes it was made from."""

import os
import uuid

import polars as pl
import pytest

from fmu.core.digests import file_digest, file_stamp
from fmu.core.errors import UsageError
from fmu.core.runner.results import INPUTS, KEY, SCHEMA, ResultStore


@pytest.fixture
def refs(tmp_path):
    folder = tmp_path / "refs"
    folder.mkdir()
    for name in ("a.png", "b.png", "t.png"):
        (folder / name).write_bytes(f"bytes of {name}".encode())
    return folder


def _inputs(refs, rid: str, k: int, row: int, target: bool = False) -> dict:
    """A plan row: key + the inputs an image is made from."""
    return {"id": rid, "k": k, "row": row, "reference": str(refs / f"{rid}.png"),
            "target": str(refs / "t.png") if target else None, "prompt": f"prompt {rid}",
            "negative_prompt": None, "seed": 10 * row + k, "steps": 20, "guidance_scale": 7.5, "id_scale": 0.5,
            "width": 64, "height": 64, "frame": "face:5"}


def _record(job: dict, status: str = "ok", **extra) -> dict:
    """What a worker records for a job (stamps and digests of the files it read)."""
    rec = {**job, "status": status, "image": f"images/{job['id']}_{job['k']}.png", **extra}
    for name in ("reference", "target"):
        if job[name] is not None:
            rec[f"{name}_stamp"], rec[f"{name}_sha256"] = file_stamp(job[name]), file_digest(job[name])
    return rec


def _plan(jobs: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(jobs, schema={c: SCHEMA[c] for c in [*KEY, *INPUTS]})


def _keys(frame: pl.DataFrame) -> list[tuple]:
    return [tuple(r) for r in frame.select(KEY).iter_rows()]


def _make_image(out, job):
    path = out / "images" / f"{job['id']}_{job['k']}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"png")


def test_shards_are_merged_newest_record_per_image_in_plan_order(tmp_path, refs, monkeypatch):
    # random parts of the shard names that sort against the order written: the newest must still win
    names = iter(uuid.UUID(int=n) for n in range(2**100, 0, -2**90))
    monkeypatch.setattr(uuid, "uuid4", lambda: next(names))
    store = ResultStore(tmp_path / "out")
    a0, a1, b0 = _inputs(refs, "a", 0, 0), _inputs(refs, "a", 1, 0), _inputs(refs, "b", 0, 1)
    store.append([_record(a0, "failed", error="boom"), _record(b0)])
    store.append([])  # nothing to write: no shard
    store.append([_record(a0), _record(a1)])  # a later attempt of a0 succeeded
    assert len(list((tmp_path / "out" / ".shards").glob("*.parquet"))) == 2
    latest = store.latest()
    assert sorted(_keys(latest)) == [("a", 0, 0), ("a", 1, 0), ("b", 0, 1)]
    assert latest.filter(pl.col("id") == "a", pl.col("k") == 0)["status"].to_list() == ["ok"]
    stale = _inputs(refs, "a", 2, 0)  # a record the (edited) plan no longer asks for
    store.append([_record(stale)])
    merged = store.merge(_plan([b0, a1, a0]))
    assert _keys(merged) == [("b", 0, 1), ("a", 1, 0), ("a", 0, 0)]  # plan order, stale one dropped
    assert not list((tmp_path / "out" / ".shards").glob("*.parquet"))
    on_disk = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert on_disk.equals(merged) and on_disk.columns == list(SCHEMA)
    # a later run reads the merged table back
    assert sorted(_keys(ResultStore(tmp_path / "out").latest())) == sorted(_keys(merged))


def test_todo_skips_exactly_the_finished_images_whose_inputs_and_files_are_unchanged(tmp_path, refs):
    out = tmp_path / "out"
    store = ResultStore(out)
    jobs = {name: _inputs(refs, rid, k, row, target=(name == "with_target"))
            for name, rid, k, row in [("done", "a", 0, 0), ("no_image", "a", 1, 0), ("failed", "b", 0, 1),
                                      ("edited", "b", 1, 1), ("with_target", "b", 2, 1), ("new", "b", 3, 1)]}
    recorded = [_record(jobs["done"]), _record(jobs["no_image"]), _record(jobs["failed"], "failed", error="x"),
                _record(jobs["edited"]), _record(jobs["with_target"])]
    store.append(recorded)
    for name in ("done", "edited", "with_target"):  # no_image: its file was deleted since
        _make_image(out, jobs[name])
    plan_jobs = dict(jobs)
    plan_jobs["edited"] = {**jobs["edited"], "prompt": "a new prompt"}  # the manifest row changed
    todo = store.todo(_plan(list(plan_jobs.values())))
    assert _keys(todo) == [("a", 1, 0), ("b", 0, 1), ("b", 1, 1), ("b", 3, 1)]
    assert todo.columns == [*KEY, *INPUTS]  # the plan's own rows come back, not the records

    # touched without changing bytes: hashed again, still done; new bytes: redone (a's two images)
    stat = os.stat(refs / "a.png")
    os.utime(refs / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert ("a", 0, 0) not in _keys(store.todo(_plan(list(plan_jobs.values()))))
    (refs / "a.png").write_bytes(b"other bytes")
    assert ("a", 0, 0) in _keys(store.todo(_plan(list(plan_jobs.values()))))
    # the target counts like the reference
    (refs / "t.png").write_bytes(b"another target")
    assert ("b", 2, 1) in _keys(store.todo(_plan(list(plan_jobs.values()))))


def test_a_table_from_an_older_fmu_lacks_columns_and_its_rows_are_redone(tmp_path, refs):
    out = tmp_path / "out"
    job = _inputs(refs, "a", 0, 0)
    old = pl.DataFrame([_record(job)]).drop("frame", "reference_sha256")
    old.write_parquet(out.mkdir() or out / "results.parquet")
    _make_image(out, job)
    store = ResultStore(out)
    assert store.latest()["frame"].to_list() == [None]
    assert _keys(store.todo(_plan([job]))) == [("a", 0, 0)]


def test_a_damaged_table_is_a_usage_error_naming_it(tmp_path):
    shards = tmp_path / "out" / ".shards"
    shards.mkdir(parents=True)
    (shards / "x.parquet").write_text("not parquet")
    with pytest.raises(UsageError, match=r"x\.parquet is damaged .*move it out of the output folder"):
        ResultStore(tmp_path / "out").latest()
