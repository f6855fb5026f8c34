"""`--writer webdataset` and `--writer hf`: the outputs read back by their own libraries
(`webdataset`, `datasets.load_dataset("imagefolder")`), PNG metadata inside, resume after a kill,
and `fmu generate` end to end on the tiny preset."""

import io
import json

import datasets
import numpy as np
import polars as pl
import pytest
import webdataset as wds
from cli_run import generate as run
from PIL import Image

from fmu.core.runner.writers import make_writer
from fmu.core.runner.writers.hf import METADATA, HFWriter
from fmu.core.runner.writers.webdataset import WebDatasetWriter
from fmu.manifests.demo import DEMO_ROWS, write_demo_inputs


def _records(n):
    rng = np.random.default_rng(0)
    return [({"id": f"p.{i}" if i == 2 else f"p{i}", "k": 0, "prompt": f"prompt {i}", "seed": 10 + i,
              "id_similarity": 0.5 + i / 10, "attempt_seeds": [10 + i, 99]},
             rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for i in range(n)]


def test_webdataset_shards_read_back_with_webdataset(tmp_path):
    writer = WebDatasetWriter(tmp_path, shard_size=2)
    samples = _records(3)
    where = [writer.write(r, img) for r, img in samples]
    writer.close()
    shards = sorted((tmp_path / "shards").glob("*.tar"))
    assert len(shards) == 2 and not list((tmp_path / "shards").glob("*.part"))
    assert make_writer("webdataset", tmp_path).done() == set(where)
    read = {s["__key__"]: s for s in wds.WebDataset([str(p) for p in shards], shardshuffle=False)}
    assert sorted(read) == ["p%2E2_0", "p0_0", "p1_0"]   # a dot in the id would split the key
    for (record, image), location in zip(samples, where):
        sample = read[location.split("#")[1]]
        png = Image.open(io.BytesIO(sample["png"]))
        np.testing.assert_array_equal(np.asarray(png), image)
        assert png.info["fmu:prompt"] == record["prompt"] and png.info["fmu:seed"] == str(record["seed"])
        assert json.loads(sample["json"]) == record and sample["txt"].decode() == record["prompt"]


def test_webdataset_unfinished_shard_is_not_done(tmp_path):
    writer = WebDatasetWriter(tmp_path, shard_size=10)
    (record, image), = _records(1)
    writer.write(record, image)                     # killed before close: only a .part on disk
    assert WebDatasetWriter(tmp_path).done() == set()
    assert not list((tmp_path / "shards").iterdir())   # the part is gone; its sample is made again


def test_hf_folder_loads_with_datasets_and_repairs_a_killed_run(tmp_path):
    writer = HFWriter(tmp_path)
    samples = _records(3)
    where = [writer.write(r, img) for r, img in samples[:2]]
    writer.close()
    where.append(writer.write(*samples[2]))        # a second part folder after a close
    writer.close()
    part = tmp_path / where[0].rsplit("/", 1)[0]
    with open(part / METADATA, "a") as fh:          # a run killed mid-line, and an image with no line
        fh.write('{"file_name": "cut')
    Image.fromarray(samples[0][1]).save(part / "orphan_0.png")
    assert HFWriter(tmp_path).done() == set(where)
    ds = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "dataset"), split="train")
    assert ds.num_rows == 3
    by_id = {row["id"]: row for row in ds}
    for record, image in samples:
        row = by_id[record["id"]]
        np.testing.assert_array_equal(np.asarray(row["image"].convert("RGB")), image)
        assert row["prompt"] == record["prompt"] and row["seed"] == record["seed"]
        assert json.loads(row["record"]) == record


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, fmu_home):
    return write_demo_inputs(tmp_path_factory.mktemp("writers") / "inputs")


def test_generate_writes_webdataset_shards_and_resumes(manifest, tmp_path):
    out = tmp_path / "wds"
    args = [manifest, "--out", out, "--steps", "2", "--writer", "webdataset", "--shard-size", "3"]
    assert run(args).exit_code == 0
    df = pl.read_parquet(out / "results.parquet")
    n = sum(r[3] for r in DEMO_ROWS)
    assert df.height == n and set(df["status"]) == {"ok"} and all(i.startswith("shards/") for i in df["image"])
    shards = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode("rgb8"))
    assert len(samples) == n and len(shards) == 2
    by_key = {s["__key__"]: s for s in samples}
    for row in df.iter_rows(named=True):
        sample = by_key[row["image"].split("#")[1]]
        assert sample["json"]["prompt"] == row["prompt"] and sample["json"]["seed"] == row["seed"]
        assert sample["png"].shape == (64, 64, 3)
    again = run(args)
    assert again.exit_code == 0 and f"{n} of them finished earlier and kept" in " ".join(again.output.split())


def test_generate_writes_an_imagefolder_dataset(manifest, tmp_path):
    out = tmp_path / "hf"
    assert run([manifest, "--out", out, "--steps", "2", "--writer", "hf"]).exit_code == 0
    ds = datasets.load_dataset("imagefolder", data_dir=str(out / "dataset"), split="train")
    df = pl.read_parquet(out / "results.parquet")
    assert ds.num_rows == df.height == sum(r[3] for r in DEMO_ROWS)
    assert sorted(zip(ds["id"], ds["k"])) == sorted(zip(df["id"], df["k"]))
    for row in ds:
        assert json.loads(row["record"])["id_similarity_reason"].startswith("no_face")   # scores ride along


@pytest.mark.parametrize("writer", ["webdataset", "hf"])
def test_two_worker_processes_write_their_own_parts(manifest, tmp_path, writer):
    """--devices cpu,cpu (the processes engine): each worker writes its own shards / folder; all
    of them read back as one dataset."""
    out = tmp_path / writer
    args = [manifest, "--out", out, "--steps", "2", "--batch-size", "1", "--devices", "cpu,cpu", "--writer", writer]
    assert run(args).exit_code == 0
    df = pl.read_parquet(out / "results.parquet")
    n = sum(r[3] for r in DEMO_ROWS)
    assert df.height == n and set(df["status"]) == {"ok"}
    if writer == "webdataset":
        shards = sorted(str(p) for p in (out / "shards").glob("*.tar"))
        keys = sorted(s["__key__"] for s in wds.WebDataset(shards, shardshuffle=False))
        # one shard per worker process that made images (the results say which worker made each)
        assert len(shards) == df["worker"].n_unique() and keys == sorted(i.split("#")[1] for i in df["image"])
    else:
        parts = [p for p in (out / "dataset" / "train").iterdir() if p.is_dir()]
        ds = datasets.load_dataset("imagefolder", data_dir=str(out / "dataset"), split="train")
        assert len(parts) == df["worker"].n_unique() and ds.num_rows == n
