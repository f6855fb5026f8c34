"""Module entry point for launchers that start one process per device:

    torchrun --nproc_per_node 2 -m fmu.train_entry train --data data/ --out runs/t
    accelerate launch --multi_gpu --num_processes 2 -m fmu.train_entry train ...

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
