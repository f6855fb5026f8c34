"""Ctrl-C and SIGTERM during training: finish the step, save, then stop.

The first SIGINT or SIGTERM only asks: the loop finishes the optimizer step it is in, writes a
checkpoint, the weights so far, losses.parquet and run.json ("interrupted"), and the command
exits 130 / 143. A second signal stops at once (the last checkpoint stays as it was). A signal that
comes while a batch is being loaded is answered between its items (`TrainingSet.stop_requested`):
the batch is abandoned and the steps before it are saved, so a slow batch cannot hold the signal.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from fmu.core.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    def __init__(self):
        self.signum = 0   # the first stop signal received (0: none)

    def _handler(self, signum, frame):
        if self.signum:  # asked twice: the user wants out now
            raise Interrupted(signum)
        self.signum = signum

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
