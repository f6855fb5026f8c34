"""The public API: `from fmu import FaceMakeUp, generate, score`; README's "Use from Python" block
runs as written (tiny preset, demo inputs, offline) and its outputs are the ones `fmu generate`
writes; library use prints no progress bars or warnings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def readme_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return block


def test_import_fmu_loads_no_model_library():
    probe = ("import sys, json, fmu; print(json.dumps([m for m in ('torch', 'diffusers', 'polars') "
             "if m in sys.modules] + [n for n in ('FaceMakeUp', 'generate', 'score') if n in dir(fmu)]))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["FaceMakeUp", "generate", "score"]  # named, not loaded


def test_readme_example_runs_quietly(tmp_path, tiny_preset):
    # a fresh interpreter in an empty folder, as a user would run it; FMU_HOME is the tests' own
    proc = subprocess.run([sys.executable, "-c", readme_python_block()], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHONWARNINGS": "default"})
    assert proc.returncode == 0, proc.stderr
    # quiet: only the example's own prints reach the terminal
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout
    run = tmp_path / "runs" / "py"
    results = pl.read_parquet(run / "results.parquet")
    ok = results.filter(pl.col("status") == "ok").height
    failed = results.filter(pl.col("status") != "ok").height
    assert lines[0] == f"{ok} ok, {failed} failed; exit code {1 if failed else 0}"
    assert ok >= 3  # the astronaut (2 images) and Hanks have one face each
    assert json.loads((run / "run.json").read_text())["preset"].startswith("tiny")
    assert (run / "scores.parquet").is_file() and (run / "summary.json").is_file()
    image = np.asarray(Image.open(run / "one.png"))
    assert image.shape == (64, 64, 3) and image.std() > 0


def test_generate_rejects_an_unknown_option(tmp_path):
    import pytest

    import fmu

    with pytest.raises(TypeError, match="stpes"):
        fmu.generate(tmp_path / "m.csv", out=tmp_path / "o", stpes=2)
