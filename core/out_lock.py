"""One run at a time per output folder.

Two runs writing into one `--out` would each merge, rewrite and clean up what the other is still
writing. A run therefore holds an exclusive lock on `OUT/.lock` (`fcntl.flock`) from before its
first write to its end; a second run on the same folder is refused at once with a one-line usage
error naming the holder (pid and command) rather than waiting: a batch that silently waits behind
another for hours looks like a hang. The lock is the kernel's, tied to the open file: a run that
dies (kill -9 included) releases it, so there is never a stale lock to remove by hand.

Holding the lock also makes the folder's leftovers this run's own: temp files of atomic writes cut
short by a kill (`.<name>.<12 hex>.tmp`) are removed by `remove_stale_temp_files`.
"""

from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import UsageError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected from each other
    fcntl = None

LOCK_NAME = ".lock"
# the temp names of images.atomic_write_bytes: `.{name}.{uuid4().hex[:12]}.tmp`
TEMP_FILE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
_HELD: set[str] = set()  # the folders this process holds (a nested run of the same process re-enters)


@contextmanager
def locked_output(out: Path, command: str):
    """Create `out` if needed and hold its lock until the block ends; UsageError when another
    run holds it."""
    out = Path(out)
    key = os.path.realpath(out)
    if key in _HELD:  # this process holds it already (`fmu finetune` around its own preparation)
        yield out
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        fh = open(out / LOCK_NAME, "a+")  # noqa: SIM115  held open for the whole run
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create the output folder or its lock ({exc.strerror or exc})") \
            from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise UsageError(f"{out} is in use by another fmu run ({holder}); wait for it to finish or "
                                 "give another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, fmu {command}\n")
        fh.flush()
        _HELD.add(key)
        yield out
    finally:
        _HELD.discard(key)
        fh.close()  # closing releases the lock


@contextmanager
def lock_first(out: Path, command: str):
    """OUT's lock, taken by a command before its preflight (which loads libraries and reads model
    files and checkpoints: a second run used to wait half a minute to be refused). A folder created
    here and left holding only its lock is removed when a usage error stops the run before it wrote
    anything. Under a launcher (torchrun, accelerate launch) rank 0 holds it, as in the run itself:
    the other ranks are that run's own."""
    out = Path(out)
    if os.environ.get("RANK", "0") not in ("", "0"):
        yield
        return
    created = not out.exists()
    try:
        with locked_output(out, command):
            yield
    except UsageError:
        if created and out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK_NAME}:
            shutil.rmtree(out, ignore_errors=True)
        raise


def remove_stale_temp_files(*folders: Path) -> int:
    """Delete the atomic writer's temp files in `folders` (not recursively): only call it while
    holding the folder's lock, when no write of this run is in flight. Returns how many."""
    removed = 0
    for folder in folders:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if TEMP_FILE.match(name):
                try:
                    os.unlink(Path(folder) / name)
                    removed += 1
                except OSError:
                    continue
    return removed
