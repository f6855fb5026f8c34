"""Ctrl-C and SIGTERM during training: finish the step, save, then stop.

The first SIGINT or SIGTERM only asks: the loop finishes the optimizer step it is in, writes a
checkpoint, the weights so far, losses.parquet and run.json ("interrupted"), and the command
exits 130 / 143. A second signal stops at once (the last checkpoint stays as it was). A signal that
comes while a batch is being loaded is answered between its items (`TrainingSet.stop_requested`),
or, when DataLoader worker processes load the items (`--workers`), at once while the loop waits for
them (`StopRequest.waiting`): the batch is abandoned and the steps before it are saved, so a slow
batch cannot hold the signal.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from fmu.core.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StoppedWaiting(Exception):
    """The first stop signal came while the loop waited for data (`StopRequest.waiting`)."""


class StopRequest:
    def __init__(self):
        self.signum = 0   # the first stop signal received (0: none)
        self.waiting = False

    def _handler(self, signum, frame):
        if self.signum:  # asked twice: the user wants out now
            raise Interrupted(signum)
        self.signum = signum
        if self.waiting:  # blocked on data other processes load: leave the wait now
            raise StoppedWaiting(signum)

    @contextmanager
    def wait_for_data(self):
        """Inside: a first stop signal raises StoppedWaiting out of the wait (one process only:
        ranks must agree on where to stop). A signal received before is raised on entry."""
        self.waiting = True
        try:
            if self.signum:
                raise StoppedWaiting(self.signum)
            yield
        finally:
            self.waiting = False

    @contextmanager
    def listening(self):
        """Install the handlers for the duration (main thread only: elsewhere signals cannot be caught)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handler) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
