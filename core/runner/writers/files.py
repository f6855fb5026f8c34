"""`--writer files`: one PNG per image under OUT/images/<id>_<k>.png (atomic), the image's
prompt, seed, reference and settings in its PNG text chunks (`PIL.Image.open(p).info`)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ...images import atomic_write_bytes
from .base import image_key, metadata


class FilesWriter:
    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)

    def write(self, record: dict, image) -> str:
        name = f"images/{image_key(record)}.png"
        atomic_write_bytes(self.out_dir / name, png_bytes(image, metadata(record)))
        return name

    def close(self) -> None:
        """Nothing is buffered: every write is a complete file."""

    def done(self) -> set[str]:
        images = self.out_dir / "images"
        return {f"images/{n}" for n in os.listdir(images) if n.endswith(".png")} if images.is_dir() else set()


def png_bytes(image, text: dict[str, str]) -> bytes:
    """PNG of `image` with `text` as tEXt/iTXt chunks (the pixels are encoded as without them)."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    info = PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value) if not value.isascii() else info.add_text(key, value)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()
