"""Turn the usable-rows table into work: one job per requested image, grouped into units.

Planning stays columnar (polars) so a million-row manifest plans in seconds: rows sharing
settings are denoised together, and within those, rows sharing a reference sit next to each
other so its analysis is hot in the cache. A unit (one batch) becomes Python objects only when
a worker picks it up. Image k of a row uses seed + k, so an image does not depend on batching
order; units are planned over ALL jobs, so a unit has the same members on every run and rank.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from ..manifest.validate import Row
from ..model.settings import Settings
from ..shading.controls import ControlRequest

SETTING_COLUMNS = ["steps", "guidance_scale", "id_scale", "width", "height"]
# a batch shares its settings and its layout (rows of several people: one set of identity masks)
GROUP_COLUMNS = [*SETTING_COLUMNS, "layout"]
KEY = ["id", "k", "row"]


@dataclass(slots=True)
class Job:
    row: Row
    k: int
    seed: int
    settings: Settings

    @property
    def image_name(self) -> str:
        return f"images/{self.row.id}_{self.k}.png"


def plan_table(table: pl.DataFrame, defaults: Settings, base_seed: int, batch_size: int) -> pl.DataFrame:
    """One row per requested image with its settings, seed and `unit`, in execution order."""
    if "layout" not in table.columns:  # a table of one-person rows only
        table = table.with_columns(layout=pl.lit(None, pl.String))
    jobs = (
        table.with_columns([pl.col(c).fill_null(getattr(defaults, c)) for c in SETTING_COLUMNS])
        .with_columns(base_seed=pl.col("seed").fill_null(pl.col("row") + base_seed),
                      k=pl.int_ranges(0, pl.col("num_images")))
        .explode("k")
        .with_columns(seed=(pl.col("base_seed") + pl.col("k")) % 2**32)
        .drop("base_seed")
        .sort([*GROUP_COLUMNS, "reference", "target", "row", "k"], nulls_last=True)
    )
    group = pl.struct(GROUP_COLUMNS).rle_id()
    position = pl.int_range(pl.len()).over(group)
    return jobs.with_columns(unit=pl.struct(group.alias("g"), (position // batch_size).alias("b")).rle_id())


class Units:
    """The work units of a plan: `units[i]` is the list of Jobs of unit i (built on demand)."""

    def __init__(self, jobs: pl.DataFrame, defaults: Settings, spans: list[tuple[int, int]] | None = None):
        self.jobs, self.defaults = jobs, defaults
        if spans is None:
            bounds = (jobs.with_row_index("i").group_by("unit", maintain_order=True)
                      .agg(pl.col("i").first().alias("start"), pl.len().alias("n")))
            spans = list(zip(bounds["start"].to_list(), bounds["n"].to_list()))
        self.spans = spans

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, i: int) -> list[Job]:
        start, n = self.spans[i]
        return jobs_from_frame(self.jobs.slice(start, n), self.defaults)

    def size(self, i: int) -> int:
        return self.spans[i][1]

    @property
    def total(self) -> int:
        return sum(n for _, n in self.spans)

    def subset(self, indices) -> Units:
        return Units(self.jobs, self.defaults, [self.spans[i] for i in indices])


def jobs_from_frame(frame: pl.DataFrame, defaults: Settings) -> list[Job]:
    jobs = []
    for r in frame.iter_rows(named=True):
        row = Row(index=r["row"], id=r["id"], reference=Path(r["reference"]), prompt=r["prompt"],
                  negative_prompt=r["negative_prompt"], num_images=r["num_images"],
                  target=Path(r["target"]) if r["target"] else None, controls=ControlRequest.from_record(r),
                  layout=r.get("layout"))
        settings = replace(defaults, **{c: r[c] for c in SETTING_COLUMNS})
        jobs.append(Job(row, r["k"], r["seed"], settings))
    return jobs
