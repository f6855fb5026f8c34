"""Shared rich console and quiet library logging for every command."""

from __future__ import annotations

import logging
import os
import warnings

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
    """The bar of every long command: what, how far, done/total, time spent and time left.
    `transient`: cleared when done (for commands that print a summary table in its place)."""
    return _DrawnFromFirstTask(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                               console=console, transient=transient)


def quiet_libraries() -> None:
    """Library progress bars and deprecation chatter would drown fmu's own progress."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("GLOG_minloglevel", "2")       # mediapipe / TFLite C++ logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    for name in ("diffusers", "transformers", "accelerate", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass
