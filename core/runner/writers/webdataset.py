"""`--writer webdataset`: `.tar` shards of `shard_size` samples under OUT/shards/, each sample
`KEY.png` (with the PNG text chunks of the files writer), `KEY.json` (the image's result record:
prompt, seed, settings, scores) and `KEY.txt` (the prompt), readable by the `webdataset` package.

KEY is `<id>_<k>` with `.` written `%2E` (webdataset splits a member name at its first dot into
key and extension). A shard is written as `NAME.tar.part` and renamed to `NAME.tar` once full or
closed, so a `.tar` is always complete; `done()` lists the samples of the complete shards and
removes the `.part` files a killed run left (their samples are made again). The location recorded
in results.parquet is `shards/NAME.tar#KEY`.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from .base import image_key, metadata, shard_name
from .files import png_bytes

FOLDER = "shards"
PART = ".part"


def sample_key(record: dict) -> str:
    return image_key(record).replace(".", "%2E")


def json_value(value):
    """numpy scalars and arrays, paths: as JSON has them."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class WebDatasetWriter:
    def __init__(self, out_dir: Path, shard_size: int = 1000):
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        self.out_dir, self.shard_size = Path(out_dir), shard_size
        self.folder = self.out_dir / FOLDER
        self._tar: tarfile.TarFile | None = None
        self._name: str | None = None
        self._count = 0

    def write(self, record: dict, image) -> str:
        if self._tar is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._name = shard_name("shard", ".tar")
            self._tar = tarfile.open(self.folder / (self._name + PART), "w")  # noqa: SIM115  open across writes until full
            self._count = 0
        key = sample_key(record)
        members = {"png": png_bytes(image, metadata(record)),
                   "json": json.dumps(record, default=json_value, sort_keys=True).encode(),
                   "txt": (record.get("prompt") or "").encode()}
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644   # fixed: same bytes, same member
            self._tar.addfile(info, io.BytesIO(data))
        location = f"{FOLDER}/{self._name}#{key}"
        self._count += 1
        if self._count >= self.shard_size:
            self.close()
        return location

    def close(self) -> None:
        """Finish the open shard: flushed, synced, renamed to `.tar` (complete from then on)."""
        if self._tar is None:
            return
        tar, name = self._tar, self._name
        self._tar = self._name = None
        tar.close()
        part = self.folder / (name + PART)
        with open(part, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(part, self.folder / name)

    def done(self) -> set[str]:
        if not self.folder.is_dir():
            return set()
        held = set()
        for path in sorted(self.folder.iterdir()):
            if path.name.endswith(".tar" + PART):  # a killed run's unfinished shard
                path.unlink(missing_ok=True)
                continue
            if path.suffix != ".tar":
                continue
            try:
                with tarfile.open(path) as tar:
                    names = tar.getnames()
            except (tarfile.TarError, OSError):
                continue  # damaged: its samples are made again
            held |= {f"{FOLDER}/{path.name}#{n[:-4]}" for n in names if n.endswith(".png")}
        return held
