"""Shared rich console and quiet library logging for every command."""

from __future__ import annotations

import logging
import os
import threading
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


PROGRESS_INTERVAL = 30.0   # seconds between plain progress lines when stdout is a log file


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(task) -> str:
    """One task as a plain line: what, done/total, rate, ETA, elapsed, then its detail."""
    unit = task.fields.get("unit") or "items"
    speed = task.finished_speed or task.speed
    total = f"/{task.total:g}" if task.total is not None else ""
    detail = task.fields.get("detail")
    return (f"{task.description}: {task.completed:g}{total} {unit}, "
            f"{f'{speed:.2f}' if speed else '-'} {unit}/s, ETA {_clock(task.time_remaining)}, "
            f"elapsed {_clock(task.elapsed)}" + (f", {detail}" if detail else ""))


class PlainLines(Progress):
    """stdout is not a terminal (`> run.log`, nohup, SLURM): a bar's redraws would fill the file and
    a transient bar shows nothing at all, so instead every `interval` seconds, and once at the end,
    each task is printed as one plain line (`progress_line`). The tasks are rich's own (advance,
    update, speed, ETA work as for the bar); only the drawing is replaced."""

    def __init__(self, interval: float, out: Console, *columns, transient: bool = False):
        super().__init__(*columns, console=out, transient=transient, disable=True)
        self.interval, self.out = interval, out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._every_interval, daemon=True, name="fmu-progress-lines")

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.print_lines()

    def _every_interval(self) -> None:
        while not self._stop.wait(self.interval):
            self.print_lines()

    def print_lines(self) -> None:
        with self._lock:
            lines = [progress_line(task) for task in self.tasks]
        for line in lines:
            self.out.print(line, markup=False, highlight=False, soft_wrap=True)


def progress_bar(transient: bool = False, interval: float | None = None) -> Progress:
    """The bar of every long command: what, how far, done/total, the rate (for tasks that name a
    `unit`), time spent and time left, then the task's `detail` (training: its loss terms).
    `transient`: cleared when done (for commands that print a summary table in its place). When
    stdout is not a terminal: plain lines every `interval` seconds instead (`PlainLines`)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), DetailColumn())
    if not console.is_terminal:
        return PlainLines(PROGRESS_INTERVAL if interval is None else interval, console, *columns, transient=transient)
    return _DrawnFromFirstTask(*columns, console=console, transient=transient)


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
