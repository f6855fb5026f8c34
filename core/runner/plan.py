"""Turn validated manifest rows into work: one job per requested image, batched by settings.

Image k of a row uses seed + k, so an image is the same whichever batch it lands in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path

from ..manifest import Row
from ..model.pipeline import Settings


@dataclass(frozen=True)
class Job:
    row: Row
    k: int
    seed: int
    settings: Settings

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.row.id, self.k, self.row.index)

    @property
    def image_name(self) -> str:
        return f"images/{self.row.id}_{self.k}.png"


def row_settings(row: Row, defaults: Settings) -> Settings:
    return replace(defaults, **row.overrides)


def plan_jobs(rows: list[Row], defaults: Settings, base_seed: int) -> list[Job]:
    jobs = []
    for row in rows:
        settings = row_settings(row, defaults)
        seed = row.seed if row.seed is not None else base_seed + row.index
        jobs.extend(Job(row, k, (seed + k) % 2**32, settings) for k in range(row.num_images))
    return jobs


def _group_key(job: Job) -> tuple:
    target = str(job.row.target) if job.row.target else ""
    return (job.settings.key(), str(job.row.reference), target)


def plan_batches(jobs: list[Job], batch_size: int) -> list[list[Job]]:
    """Jobs with equal settings denoise together; within that, rows sharing a reference stay
    adjacent so its analysis is hot in the cache."""
    ordered = sorted(jobs, key=lambda j: (_group_key(j), j.row.index, j.k))
    batches = []
    for _, group in groupby(ordered, key=lambda j: j.settings.key()):
        group = list(group)
        batches.extend(group[i:i + batch_size] for i in range(0, len(group), batch_size))
    return batches


def references_of(jobs: list[Job]) -> list[Path]:
    return sorted({j.row.reference for j in jobs})
