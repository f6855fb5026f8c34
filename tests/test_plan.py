"""core/runner/plan.py on its own: one job per requested image, seeds, settings, and units that
batch equal settings (checked against a plain-Python recomputation of the rules)."""

import math
import random
from pathlib import Path

import polars as pl
import pytest

from fmu.core.manifest.validate import TABLE_COLUMNS, validate
from fmu.core.model.settings import Settings
from fmu.core.runner.plan import SETTING_COLUMNS, Units, plan_table

DEFAULTS = Settings(steps=50, guidance_scale=7.5, id_scale=0.5, width=64, height=64)


def _table(rows: list[dict]) -> pl.DataFrame:
    """The usable-rows table exactly as generate builds it (validate, files not checked)."""
    manifest = pl.DataFrame(rows, infer_schema_length=None).with_columns(pl.all().cast(pl.String))
    validation = validate(manifest, Path("/refs"), check_files=False)
    assert not validation.problems, validation.problems
    return validation.table


def test_the_usable_rows_table_has_the_documented_columns():
    table = _table([{"reference": "a.png", "prompt": "p"}])
    assert table.columns == TABLE_COLUMNS


def test_one_job_per_image_with_seed_base_plus_row_plus_k_and_row_settings_over_defaults():
    table = _table([
        {"id": "a", "reference": "a.png", "prompt": "p", "num_images": 2},
        {"id": "b", "reference": "b.png", "prompt": "p", "num_images": 3, "seed": 100},
        {"id": "c", "reference": "a.png", "prompt": "p", "steps": 10, "guidance_scale": 3},
    ])
    plan = plan_table(table, DEFAULTS, base_seed=7, batch_size=4)
    got = {(r["id"], r["k"]): (r["seed"], r["steps"], r["guidance_scale"], r["width"])
           for r in plan.iter_rows(named=True)}
    assert got == {("a", 0): (7, 50, 7.5, 64), ("a", 1): (8, 50, 7.5, 64),      # row 0: base 7 + 0 + k
                   ("b", 0): (100, 50, 7.5, 64), ("b", 1): (101, 50, 7.5, 64),  # its own seed + k
                   ("b", 2): (102, 50, 7.5, 64),
                   ("c", 0): (9, 10, 3.0, 64)}                                  # row 2: 7 + 2
    assert plan.height == 6 and plan["row"].to_list().count(1) == 3


def test_a_seed_wraps_into_32_bits():
    table = _table([{"reference": "a.png", "prompt": "p", "seed": 2**32 - 1, "num_images": 2}])
    assert plan_table(table, DEFAULTS, 0, 4)["seed"].to_list() == [2**32 - 1, 0]


def _random_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {"id": f"r{i}", "reference": f"ref{rng.randrange(4)}.png", "prompt": "p",
               "num_images": rng.randint(1, 3)}
        if rng.random() < 0.5:
            row["steps"] = rng.choice([20, 30])
        if rng.random() < 0.3:
            row["guidance_scale"] = rng.choice([5.0, 7.5])  # 7.5: equal to the default, same batch
        rows.append(row)
    return rows


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_units_batch_equal_settings_in_at_most_batch_size_jobs(batch_size):
    plan = plan_table(_table(_random_rows(40, seed=batch_size)), DEFAULTS, 0, batch_size)
    jobs = plan.to_dicts()
    units: dict[int, list[dict]] = {}
    for job in jobs:
        units.setdefault(job["unit"], []).append(job)
    assert sorted(units) == list(range(len(units)))
    assert [j["unit"] for j in jobs] == sorted(j["unit"] for j in jobs)  # execution order = unit order
    for members in units.values():
        assert 1 <= len(members) <= batch_size
        assert len({tuple(m[c] for c in SETTING_COLUMNS) for m in members}) == 1
    # as few units as the rule allows: ceil(jobs / batch) per distinct settings
    per_setting: dict[tuple, int] = {}
    for job in jobs:
        key = tuple(job[c] for c in SETTING_COLUMNS)
        per_setting[key] = per_setting.get(key, 0) + 1
    assert len(units) == sum(math.ceil(n / batch_size) for n in per_setting.values())
    # within equal settings, rows sharing a reference sit together (its analysis stays hot)
    for key in per_setting:
        refs = [j["reference"] for j in jobs if tuple(j[c] for c in SETTING_COLUMNS) == key]
        assert refs == sorted(refs)


def test_seeds_do_not_depend_on_batching():
    table = _table(_random_rows(25, seed=1))
    seeds = [plan_table(table, DEFAULTS, 3, b).sort("row", "k")["seed"].to_list() for b in (1, 4, 16)]
    assert seeds[0] == seeds[1] == seeds[2]


def test_units_build_their_jobs_on_demand_and_subset_keeps_members():
    table = _table([
        {"id": "a", "reference": "a.png", "prompt": "one", "num_images": 3, "target": "t.png"},
        {"id": "b", "reference": "b.png", "prompt": "two", "negative_prompt": "ugly", "steps": 20},
    ])
    plan = plan_table(table, DEFAULTS, 0, 2)
    units = Units(plan, DEFAULTS)
    assert len(units) == 3 and units.total == 4
    assert [units.size(i) for i in range(3)] == [1, 2, 1]  # steps 20 sorts first; a's 3 images: 2 + 1
    (b,) = units[0]
    assert (b.row.id, b.row.prompt, b.row.negative_prompt, b.row.reference) == ("b", "two", "ugly",
                                                                               Path("/refs/b.png"))
    assert b.settings == Settings(steps=20, guidance_scale=7.5, id_scale=0.5, width=64, height=64)
    a0, a1 = units[1]
    assert (a0.k, a1.k, a0.seed, a1.seed) == (0, 1, 0, 1) and a0.row.target == Path("/refs/t.png")
    assert a0.image_name == "images/a_0.png" and a0.settings == DEFAULTS
    part = units.subset([2, 0])
    assert len(part) == 2 and part.total == 2
    assert [(j.row.id, j.k) for j in part[0]] == [("a", 2)] and [j.row.id for j in part[1]] == ["b"]
