"""Keep the C++ start-up chatter of native libraries (mediapipe / TFLite / absl) off the terminal.

mediapipe 0.10.21 logs through absl before any log level can be set, straight to file
descriptor 2, so Python's logging cannot reach it. Around the calls that produce it, fd 2 goes to
a temporary file; afterwards everything except those info/warning lines is written back, so an
error (or another thread's output) is delayed, never lost.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading

_CHATTER = re.compile(
    r"^(?:[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\] "      # absl/glog INFO and WARNING lines
    r"|INFO: Created TensorFlow Lite"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called)")
_lock = threading.Lock()


def is_chatter(line: str) -> bool:
    return bool(_CHATTER.match(line))


@contextlib.contextmanager
def quiet_native_stderr():
    with _lock:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable fd 2 (embedded, closed): nothing to quiet
            yield
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                kept = [line for line in sink.read().decode(errors="replace").splitlines(keepends=True)
                        if not is_chatter(line)]
                if kept:
                    os.write(2, "".join(kept).encode())
