"""`--writer hf`: a Hugging Face `imagefolder` dataset under OUT/dataset/, which
`datasets.load_dataset("imagefolder", data_dir="OUT/dataset")` loads.

Each worker writes into its own folder `dataset/train/<part>/` (writers never share a file): the
images as `KEY.png` (atomic, with the files writer's PNG text chunks) and one `metadata.jsonl` line
per image, appended after the image is on disk: `file_name`, `id`, `k`, `seed`, `prompt` and the
whole result record as JSON text in `record` (scores included; one text column keeps the schema
the same in every folder, whatever the record holds). `done()` counts an image only when its file
and its metadata line are both there; it drops a line a killed run cut short and an image whose
line never came, so the folder always loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ...images import atomic_write_bytes
from .base import image_key, metadata, shard_name
from .files import png_bytes
from .webdataset import json_value

FOLDER = "dataset/train"
METADATA = "metadata.jsonl"


class HFWriter:
    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.root = self.out_dir / FOLDER
        self._part: Path | None = None

    def write(self, record: dict, image) -> str:
        if self._part is None:
            self._part = self.root / shard_name("part", "")
            self._part.mkdir(parents=True, exist_ok=True)
        name = f"{image_key(record)}.png"
        atomic_write_bytes(self._part / name, png_bytes(image, metadata(record)))
        line = {"file_name": name, "id": str(record["id"]), "k": int(record["k"]),
                "seed": int(record["seed"]) if record.get("seed") is not None else -1,
                "prompt": record.get("prompt") or "",
                "record": json.dumps(record, default=json_value, sort_keys=True)}
        with open(self._part / METADATA, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return f"{FOLDER}/{self._part.name}/{name}"

    def close(self) -> None:
        """Every line is synced as it is written; the next write after a close starts a new part."""
        self._part = None

    def done(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        held = set()
        for part in sorted(p for p in self.root.iterdir() if p.is_dir()):
            held |= {f"{FOLDER}/{part.name}/{n}" for n in _repair(part)}
        return held


def _repair(part: Path) -> set[str]:
    """The images of `part` with both file and metadata line; a cut-off line, a line whose image is
    gone and an image without a line are removed, so `imagefolder` loads the folder."""
    path = part / METADATA
    lines, names = [], set()
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    for raw in text.splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and (part / str(entry.get("file_name"))).is_file():
            lines.append(raw)
            names.add(entry["file_name"])
    kept = "".join(line + "\n" for line in lines)
    if kept != text:
        atomic_write_bytes(path, kept.encode("utf-8"))
    for image in part.glob("*.png"):
        if image.name not in names:
            image.unlink(missing_ok=True)
    if not names and not lines:
        path.unlink(missing_ok=True)
    return names
