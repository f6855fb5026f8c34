"""Shared rich console and quiet library logging for every command."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from fmu.core.errors import UsageError

console = Console(stderr=False, highlight=False)
# soft_wrap: an error stays one line however narrow the terminal
err = Console(stderr=True, highlight=False, soft_wrap=True)


def shown(value) -> str:
    """A value from user data, safe to print in a table: markup escaped, control characters
    (which a terminal would obey) written as escapes."""
    text = "" if value is None else str(value)
    return escape("".join(c if c.isprintable() else repr(c)[1:-1] for c in text))


def error(message: str) -> None:
    """`error: message` on stderr; escaped, since paths and values may hold [brackets]."""
    err.print(f"[red]error:[/] {escape(message)}")


def refuse_overwriting(out, inputs) -> None:
    """A command never writes over one of its own inputs (`--out` naming the manifest or photo it
    reads): UsageError before anything is read."""
    target = Path(out).expanduser().absolute()
    for given in (Path(i).expanduser() for i in inputs if i is not None):
        same = target.exists() and given.exists() and os.path.samefile(target, given)
        if same or given.absolute() == target:
            raise UsageError(f"--out {out} is the input {given}: give another file to write, inputs are "
                             "never overwritten")


class RateColumn(ProgressColumn):
    """Units per second, named by the task's `unit` field (`add_task(..., unit="steps")`)."""

    def render(self, task) -> Text:
        unit = task.fields.get("unit")
        if not unit:
            return Text("")
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed")


class DetailColumn(ProgressColumn):
    """The task's `detail` field: what the work reports as it goes (training: each loss term)."""

    def render(self, task) -> Text:
        return Text(str(task.fields.get("detail", "")))


class _DrawnFromFirstTask(Progress):
    """A Progress that starts drawing when its first task is added, not when its block is entered:
    a command that stops before any work (a usage error, a locked --out) prints its one error line
    and nothing else."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.live.is_started:
            self.stop()

    def add_task(self, *args, **kwargs):
        task = super().add_task(*args, **kwargs)
        if not self.live.is_started:
            self.start()
        return task


def progress_bar(transient: bool = False) -> Progress:
    """The bar of every long command: what, how far, done/total, the rate (for tasks that name a
    `unit`), time spent and time left, then the task's `detail` (training: its loss terms).
    `transient`: cleared when done (for commands that print a summary table in its place)."""
    return _DrawnFromFirstTask(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), DetailColumn(),
                               console=console, transient=transient)


def download_bar() -> Progress:
    """Downloads: bytes done / total, speed, ETA."""
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console)


def quiet_libraries() -> None:
    """Library progress bars and deprecation chatter would drown fmu's own progress.

    Environment switches and stdlib logging only: importing diffusers to call its
    `disable_progress_bar()` would cost every command, `fmu --help` included, seconds. diffusers
    has no environment switch for its tqdm bars ("Loading pipeline components"), tqdm itself does
    (`TQDM_DISABLE`, read when tqdm is imported); fmu shows its own rich bars instead."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("GLOG_minloglevel", "2")       # mediapipe / TFLite C++ logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    for name in ("diffusers", "transformers", "accelerate", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
