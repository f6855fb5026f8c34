"""The offline demo's inputs: real photos that ship inside installed packages, copied at run time
(fmu commits no third-party photos), a manifest that uses them, the masks that
`examples/train_example.csv` names (rough boxes from the dlib face detector), and a small scoring
example of real photos (`score-example/`) on which `fmu score` measures identity similarity."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from fmu.core.faces import get_backend
from fmu.core.images import load_rgb, save_png

DEMO_ROWS = [
    ("astronaut", "astronaut.png", "a portrait photo of a woman in a space suit, studio lighting", 2),
    ("hanks", "tom_hanks.png", "a photo of a man wearing a hat in a garden", 1),
    ("group", "t1.jpg", "an oil painting portrait of a smiling person", 1),
]


# mask file -> (photo, region): "face" = the detected face box; "below" = from the face's chin to the
# bottom, 1.5 face widths either side (the astronaut's suit, roughly). Enough to show the format.
DEMO_MASKS = {
    "masks/astronaut_face.png": ("astronaut.png", "face"),
    "masks/astronaut_suit.png": ("astronaut.png", "below"),
    "masks/hanks_face.png": ("tom_hanks.png", "face"),
}


def demo_photos() -> dict[str, Path]:
    # deferred: heavy (insightface, scikit-image); imported only to find the photos they ship
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
    write_demo_masks(folder)
    write_score_example(folder)
    manifest = folder / "manifest.csv"
    pl.DataFrame({
        "id": [r[0] for r in DEMO_ROWS], "reference": [r[1] for r in DEMO_ROWS],
        "prompt": [r[2] for r in DEMO_ROWS], "num_images": [r[3] for r in DEMO_ROWS],
        "seed": [7, 11, 13],
    }).write_csv(manifest)
    return manifest


def write_demo_masks(folder: Path) -> None:
    """The masks next to the photos in `folder`, each the size of its photo (white = region)."""
    backend = None
    for name, (photo, region) in DEMO_MASKS.items():
        if (folder / name).exists():
            continue
        backend = backend or get_backend("dlib")
        image = load_rgb(folder / photo)
        x1, y1, x2, y2 = [int(round(v)) for v in max(backend.detect(image), key=lambda f: f.area).bbox]
        if region == "below":
            side = (x2 - x1) * 3 // 2
            x1, y1, x2, y2 = x1 - side, y2, x2 + side, image.shape[0]
        mask = np.zeros(image.shape[:2], np.uint8)
        mask[max(y1, 0):y2, max(x1, 0):x2] = 255
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        save_png(folder / name, mask)


SCORE_EXAMPLE = "score-example"


def write_score_example(folder: Path) -> Path:
    """A small scoring example of real photos, so that `fmu score` shows its metrics measuring
    something offline (the demo's generated images are noise from toy weights, so no face is found
    in them): FOLDER/score-example/images/ holds, as stand-ins for generated outputs, the astronaut
    mirrored (the same person: a high FaceSim) and the largest face of t1.jpg (another person: a low
    one), paired with the astronaut by FOLDER/score-example/manifest.csv. Returns the manifest.

        fmu score --images FOLDER/score-example/images --manifest FOLDER/score-example/manifest.csv
    """
    folder = Path(folder)
    example = folder / SCORE_EXAMPLE
    photos = demo_photos()
    astronaut = load_rgb(photos["astronaut.png"])
    group = load_rgb(photos["t1.jpg"])
    face = max(get_backend("dlib").detect(group), key=lambda f: f.area)
    x1, y1, x2, y2 = face.bbox
    cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, 2.2 * max(x2 - x1, y2 - y1)
    box = [round(v) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)]
    box = [max(box[0], 0), max(box[1], 0), min(box[2], group.shape[1]), min(box[3], group.shape[0])]
    other = np.asarray(Image.fromarray(group[box[1]:box[3], box[0]:box[2]]).resize((256, 256),
                                                                                   Image.Resampling.LANCZOS))
    save_png(example / "images" / "astronaut_0.png", np.ascontiguousarray(astronaut[:, ::-1]))
    save_png(example / "images" / "astronaut_1.png", other)
    manifest = example / "manifest.csv"
    pl.DataFrame({"id": ["astronaut"], "reference": ["../astronaut.png"],
                  "prompt": ["a portrait photo of a woman in a space suit"]}).write_csv(manifest)
    return manifest
