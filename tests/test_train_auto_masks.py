"""Training uses the auto masks: on data from `fmu prepare` (default --masks auto) the L_map term of
`fmu train` (tiny preset) is non-zero exactly at the steps whose sample has masked phrases."""

from __future__ import annotations

import json
import shutil

import polars as pl


def test_lmap_is_nonzero_for_rows_with_auto_masks(tmp_path, photos, tiny_preset):
    from fmu.training.config import load_config
    from fmu.training.prepare import PrepareConfig, run_prepare
    from fmu.training.trainer import run_training

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(photos["astronaut.png"], src / "astronaut.png")
    (src / "astronaut.txt").write_text("a woman with full red lips, thin eyebrows and blue eyes")
    shutil.copy(photos["tom_hanks.png"], src / "hanks.png")
    (src / "hanks.txt").write_text("a photo of a person")          # no region word: no mask
    data = run_prepare(PrepareConfig(source=src, out=tmp_path / "data", resolution=64))
    masks = dict(zip(*pl.read_parquet(data.manifest).select("id", "masks")))
    assert [m["phrase"] for m in masks["astronaut"]] == ["full red lips", "thin eyebrows", "blue eyes"]
    assert masks["hanks"].to_list() == []

    out = tmp_path / "run"
    cfg = load_config(None, {"data": data.manifest, "out": out, "max_steps": 6, "batch_size": 1, "seed": 5,
                             "caption_drop": 0.0, "lambda_id": 0.0, "checkpoint_every": 0, "validate_every": 0})
    run_training(cfg)
    losses = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    seen = [json.loads(line) for line in (out / "samples" / "rank0.jsonl").read_text().splitlines()]
    assert len(losses) == len(seen) == 6                            # batch 1, no accumulation: one sample a step
    by_id = {}
    for loss, sample in zip(losses, seen):
        (rid,) = sample["ids"]
        by_id.setdefault(rid, []).append(loss["map"])
    assert set(by_id) == {"astronaut", "hanks"}
    assert all(value > 0 for value in by_id["astronaut"]), by_id
    assert all(value == 0 for value in by_id["hanks"]), by_id
