"""Engines picked by name, the writer stage (PNG text chunks; resume asks the writer what it
holds), and `--engine ray` without Ray as one usage error."""

import sys
from pathlib import Path

import polars as pl
import pytest
from cli_run import generate as run
from PIL import Image

from fmu.core.runner import writers
from fmu.core.runner.writers.base import Writer
from fmu.core.runner.writers.files import FilesWriter
from fmu.manifests.demo import DEMO_ROWS, write_demo_inputs

FAST = ["--steps", "2", "--batch-size", "2", "--no-shading"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, fmu_home):
    folder = tmp_path_factory.mktemp("engines")
    manifest = write_demo_inputs(folder / "inputs")
    out = folder / "run"
    assert run([manifest, "--out", out, *FAST]).exit_code == 0
    return manifest, out


def test_every_png_carries_prompt_seed_reference_and_settings(demo):
    manifest, out = demo
    df = pl.read_parquet(out / "results.parquet")
    rows = {rid: (prompt, n) for rid, _, prompt, n in DEMO_ROWS}
    assert df.height == sum(n for _, _, _, n in DEMO_ROWS)
    manifest_rows = pl.read_csv(manifest)
    for rec in df.iter_rows(named=True):
        info = Image.open(out / rec["image"]).info
        row = manifest_rows.row(rec["row"], named=True)
        assert info["fmu:id"] == rec["id"] == row["id"] and info["fmu:k"] == str(rec["k"])
        assert info["fmu:prompt"] == rows[rec["id"]][0] == row["prompt"]
        assert info["fmu:seed"] == str(row["seed"] + rec["k"])  # image k of a row uses its seed + k
        assert Path(info["fmu:reference"]).resolve() == (manifest.parent / row["reference"]).resolve()
        assert (info["fmu:steps"], info["fmu:width"], info["fmu:height"]) == ("2", "64", "64")
        assert info["fmu:guidance_scale"] == str(rec["guidance_scale"])


class Forgetful(FilesWriter):
    """Holds every file but says it no longer holds `images/<first>` (as a writer whose
    container was cut short would)."""

    forget = None

    def done(self) -> set[str]:
        return super().done() - {self.forget}


def test_resume_asks_the_writer_what_is_done(demo, tmp_path, monkeypatch):
    manifest, out = demo
    first = pl.read_parquet(out / "results.parquet")["image"][0]
    monkeypatch.setitem(writers.WRITERS, "forgetful", Forgetful)
    monkeypatch.setattr(Forgetful, "forget", first)
    assert isinstance(Forgetful(out), Writer)
    before = pl.read_parquet(out / "results.parquet")
    res = run([manifest, "--out", out, *FAST, "--writer", "forgetful"])
    assert res.exit_code == 0, res.output
    after = pl.read_parquet(out / "results.parquet")
    changed = after.join(before.select("image", "finished_at"), on="image").filter(
        pl.col("finished_at") != pl.col("finished_at_right"))
    assert changed["image"].to_list() == [first]  # only the image the writer does not hold is redone


@pytest.mark.parametrize(("args", "words"), [
    (["--engine", "ray"], "pip install"),
    (["--engine", "torchrun"], "torchrun"),
    (["--writer", "nope"], "--writer"),
])
def test_engine_and_writer_problems_are_usage_errors(demo, tmp_path, monkeypatch, args, words):
    manifest, _ = demo
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as when Ray is not installed
    monkeypatch.delitem(sys.modules, "fmu.core.runner.ray_engine", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    res = run([manifest, "--out", tmp_path / "o", *args])
    assert res.exit_code == 2 and words in res.output
    assert not (tmp_path / "o").exists()
