"""Engine options declared once: `--engine` of the commands that merge their rows at the end (`fmu
prepare`, `fmu score`; `fmu generate`'s own adds torchrun), and `--ray-address` / `--ray-cpus` of all
three."""

from __future__ import annotations

from typing import Annotated

import typer

from . import panels as P
from .choices import Engine

MergingEngineOpt = Annotated[Engine | None, typer.Option(
    help="inline | processes | ray (default: inline; fmu prepare: processes for --workers > 1). processes: one "
         "worker process per worker / device entry; ray: the rows on a "
         'Ray cluster\'s actors (pip install "fmu[ray]"); the output folder must be one shared path on every '
         "node.", rich_help_panel=P.DEVICES)]
RayAddressOpt = Annotated[str | None, typer.Option(
    help="--engine ray: the cluster (default: auto when RAY_ADDRESS is set, else a new local instance).",
    rich_help_panel=P.DEVICES)]
RayCpusOpt = Annotated[float, typer.Option(
    min=0.01, help="--engine ray on CPU nodes: CPUs each actor reserves (leave some for Ray Data's own tasks).",
    rich_help_panel=P.DEVICES)]
