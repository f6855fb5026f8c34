"""The offline demo's inputs: real photos that ship inside installed packages, copied at run time
(fmu commits no third-party photos), and a manifest that uses them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl

DEMO_ROWS = [
    ("astronaut", "astronaut.png", "a portrait photo of a woman in a space suit, studio lighting", 2),
    ("hanks", "tom_hanks.png", "a photo of a man wearing a hat in a garden", 1),
    ("group", "t1.jpg", "an oil painting portrait of a smiling person", 1),
]


def demo_photos() -> dict[str, Path]:
    import insightface
    import skimage

    ins = Path(os.path.dirname(insightface.__file__)) / "data" / "images"
    ski = Path(os.path.dirname(skimage.__file__)) / "data"
    return {"astronaut.png": ski / "astronaut.png", "tom_hanks.png": ins / "Tom_Hanks_54745.png",
            "t1.jpg": ins / "t1.jpg"}


def write_demo_inputs(folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in demo_photos().items():
        if not (folder / name).exists():
            shutil.copyfile(src, folder / name)
    manifest = folder / "manifest.csv"
    pl.DataFrame({
        "id": [r[0] for r in DEMO_ROWS], "reference": [r[1] for r in DEMO_ROWS],
        "prompt": [r[2] for r in DEMO_ROWS], "num_images": [r[3] for r in DEMO_ROWS],
        "seed": [7, 11, 13],
    }).write_csv(manifest)
    return manifest
