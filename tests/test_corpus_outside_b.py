"""Corpus of issue 23, second part: a resume on other data, an expand/shade that would overwrite its
input or sweep without end, progress lines in a log file, and a re-run with nothing to do that
answers before any model loads. Each case fails with one line naming what was wrong."""

from __future__ import annotations

import shutil

import polars as pl
import pytest
from test_train_loop import _cfg, prepared  # noqa: F401  (the module's prepared-data fixture)

from fmu.core.errors import UsageError


def test_resume_on_re_prepared_data_is_refused_with_the_difference(prepared, tmp_path):  # noqa: F811
    from fmu.training.trainer import run_training

    data = tmp_path / "data"
    shutil.copytree(prepared.manifest.parent, data)
    manifest = data / prepared.manifest.name
    out = tmp_path / "out"
    run_training(_cfg(manifest, out, max_steps=2, checkpoint_every=2, validate_every=0, lambda_id=0))
    rows = pl.read_parquet(manifest)
    rows.head(rows.height - 1).write_parquet(manifest)   # prepared again, one row fewer
    with pytest.raises(UsageError, match="trained on other data") as caught:
        run_training(_cfg(manifest, out, max_steps=4, resume="latest", validate_every=0, lambda_id=0))
    assert f"{rows.height} prepared rows" in str(caught.value)
    assert f"now holds {rows.height - 1}" in str(caught.value)
    rows.write_parquet(manifest)   # the same rows again: the resume goes on
    summary = run_training(_cfg(manifest, out, max_steps=3, resume="latest", validate_every=0, lambda_id=0))
    assert [h["step"] for h in summary.losses] == [3]
