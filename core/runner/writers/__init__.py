"""Output writers (base.py: the Writer contract); `make_writer` picks one by name (`--writer`)."""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError
from .base import Writer
from .files import FilesWriter

WRITERS = {"files": FilesWriter}


def make_writer(name: str, out_dir: Path, **opts) -> Writer:
    if name not in WRITERS:
        raise UsageError(f"--writer {name!r}: use one of {', '.join(WRITERS)}")
    return WRITERS[name](Path(out_dir), **opts)
