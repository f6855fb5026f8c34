"""The output stage: what every engine hands each finished image to.

A Writer is made once per worker (in-process, per worker process, per Ray actor) by
`make_writer(name, out_dir, **opts)` and used from that worker only; writers in different
workers never share a file (a writer that appends to containers, e.g. tar shards, names its own
with a unique part such as `shard_name()`). The results table (results.parquet) stays the record
of what ran; the writer holds the images.

Contract:
- `write(record, image) -> str`: store one image; return its location, recorded in the results'
  `image` column (`images/<id>_<k>.png` for `files`; a writer of containers returns something
  that names container and member). Raise OSError when it cannot be stored: that row fails with
  the reason, the run goes on. `record` is the row's result record (id, k, row, prompt,
  negative_prompt, seed, reference, steps, guidance_scale, id_scale, width, height, frame, ...).
- `close()`: flush and finish whatever is open, so every image written so far is complete on
  disk; called when a worker's run of units ends (the Ray engine's actors: after each batch it is
  handed). A `write` after `close` must work (start a new container). An image is done only once
  the containing file is complete: a writer that buffers must make `done()` exclude what a
  killed run left unfinished.
- `done() -> set[str]`: the locations (as `write` returned them) of the images this output holds
  complete; resume keeps a finished record only when its location is in this set. Called in the
  main process before the workers start, on a fresh instance.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Protocol, runtime_checkable

from PIL import Image

# the record fields every image carries with it (PNG text chunks, sidecar metadata)
METADATA = ("id", "k", "prompt", "negative_prompt", "seed", "reference", "target", "steps", "guidance_scale",
            "id_scale", "width", "height", "frame", "yaw", "pitch", "roll", "expression", "light", "layout")


@runtime_checkable
class Writer(Protocol):
    out_dir: Path

    def write(self, record: dict, image: Image.Image) -> str: ...

    def close(self) -> None: ...

    def done(self) -> set[str]: ...


def image_key(record: dict) -> str:
    """The name an image is stored under, without extension: `<id>_<k>` (ids are checked to be
    safe file names by the manifest validator)."""
    return f"{record['id']}_{record['k']}"


def metadata(record: dict) -> dict[str, str]:
    """The image's prompt, seed, reference id and main settings as text (absent values left out);
    `fmu:reference` is the reference path the row named."""
    return {f"fmu:{name}": str(record[name]) for name in METADATA if record.get(name) is not None}


def shard_name(prefix: str, suffix: str) -> str:
    """A container name no other worker (process, node) picks: prefix, pid, random part."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
