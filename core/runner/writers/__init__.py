"""Output writers (base.py: the Writer contract); `make_writer` picks one by name (`--writer`)."""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError
from .base import Writer
from .files import FilesWriter
from .hf import HFWriter
from .webdataset import WebDatasetWriter

WRITERS = {"files": FilesWriter, "webdataset": WebDatasetWriter, "hf": HFWriter}
OPTIONS = {"webdataset": ("shard_size",)}   # the run options each writer takes (others ignore them)


def make_writer(name: str, out_dir: Path, **opts) -> Writer:
    if name not in WRITERS:
        raise UsageError(f"--writer {name!r}: use one of {', '.join(WRITERS)}")
    return WRITERS[name](Path(out_dir), **{k: v for k, v in opts.items() if k in OPTIONS.get(name, ())})
