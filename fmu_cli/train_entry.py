"""The training commands alone, kept for launch scripts written before `python -m fmu` (use that,
fmu_cli/__main__.py: `torchrun --nproc_per_node 2 -m fmu train --data data/ --out runs/t`):

    torchrun --nproc_per_node 2 -m fmu.train_entry train --data data/ --out runs/t

(`accelerate launch --cpu --num_processes 2` starts one process only.)
"""

from __future__ import annotations

import typer

from .app import Commands
from .console import quiet_libraries
from .panels import Command
from .train_cmd import finetune, prepare, train

app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True)
app.command("train", cls=Command)(train)
app.command("finetune", cls=Command)(finetune)
app.command("prepare", cls=Command)(prepare)


def main() -> None:
    quiet_libraries()
    app()


if __name__ == "__main__":
    main()
