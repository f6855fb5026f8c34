"""sheet.png (`fmu score --sheet`): a run to look at, not read. One band per reference: the
reference, its 3D condition (when the run saved one), then the outputs made from it, each with its
id, prompt and score written under it. Bands are in the order references first appear; a band
shows at most MAX_OUTPUTS outputs and the sheet at most MAX_BANDS bands (the rest are counted in
the last line).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..errors import ImageError
from ..images import atomic_write_bytes, load_rgb

CELL = 160            # thumbnail side
GAP = 6
TEXT_LINES = 3        # under each cell: name, prompt, score
LINE = 14
MAX_OUTPUTS = 8
MAX_BANDS = 60
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
SCORES = (("facesim_arcface", "FaceSim", 3), ("facesim_dlib", "FaceSim", 3), ("clip_t", "CLIP-T", 1),
          ("pose_error_deg", "pose", 1))


def _font():
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: the bitmap font, one size
        return ImageFont.load_default()


def _thumb(path: str | None, decoded: dict) -> Image.Image | None:
    if not path:
        return None
    image = decoded.get(path)
    if not isinstance(image, np.ndarray):
        try:
            image = load_rgb(path)
        except ImageError:
            return None
    # scaled to the cell both ways: a toy run's 64 px images are enlarged to be seen
    return ImageOps.contain(Image.fromarray(image).convert("RGB"), (CELL, CELL), Image.Resampling.LANCZOS)


def _fit(draw: ImageDraw.ImageDraw, text: str, font) -> str:
    """`text` cut (with an ellipsis) to the cell's width."""
    if draw.textlength(text, font=font) <= CELL:
        return text
    while text and draw.textlength(text + "…", font=font) > CELL:
        text = text[:-1]
    return text + "…"


def score_text(row: dict) -> str:
    """The score line under an output: its first score, else its status."""
    if row.get("status") not in (None, "ok"):
        return row["status"]
    parts = [f"{label} {row[col]:.{digits}f}" for col, label, digits in SCORES if row.get(col) is not None]
    return " ".join(parts[:2]) or "no score"


def bands(scores: pl.DataFrame) -> list[list[dict]]:
    """The rows grouped by reference, in first-appearance order."""
    groups: dict[str, list[dict]] = {}
    for row in scores.to_dicts():
        groups.setdefault(str(row.get("reference")), []).append(row)
    return list(groups.values())


def contact_sheet(scores: pl.DataFrame, decoded: dict) -> Image.Image:
    groups = bands(scores)
    shown = groups[:MAX_BANDS]
    columns = 2 + min(MAX_OUTPUTS, max((len(g) for g in shown), default=0))
    cell_h = CELL + TEXT_LINES * LINE + GAP
    width = columns * (CELL + GAP) + GAP
    height = len(shown) * cell_h + GAP + (LINE + GAP if len(groups) > len(shown) else 0)
    sheet = Image.new("RGB", (width, max(height, cell_h)), BACKGROUND)
    draw, font = ImageDraw.Draw(sheet), _font()
    for b, group in enumerate(shown):
        top = GAP + b * cell_h
        first = group[0]
        cells = [(_thumb(first.get("reference"), decoded), ["reference", Path(str(first.get("reference"))).name, ""]),
                 (_thumb(first.get("condition"), decoded), ["condition", "", ""] if first.get("condition") else None)]
        cells += [(_thumb(r.get("image"), decoded), [f"{r['id']}_{r['k']}", r.get("prompt") or "", score_text(r)])
                  for r in group[:MAX_OUTPUTS]]
        for c, (thumb, lines) in enumerate(cells):
            if lines is None:
                continue
            left = GAP + c * (CELL + GAP)
            if thumb is not None:
                sheet.paste(thumb, (left + (CELL - thumb.width) // 2, top + (CELL - thumb.height) // 2))
            else:
                draw.rectangle((left, top, left + CELL - 1, top + CELL - 1), outline=(180, 180, 180))
            for j, text in enumerate(lines):
                draw.text((left, top + CELL + 2 + j * LINE), _fit(draw, str(text), font), fill=INK, font=font)
        if len(group) > MAX_OUTPUTS:
            draw.text((GAP, top + cell_h - GAP), f"+{len(group) - MAX_OUTPUTS} more outputs", fill=INK, font=font)
    if len(groups) > len(shown):
        draw.text((GAP, height - LINE - GAP), f"+{len(groups) - len(shown)} more references (report.html)",
                  fill=INK, font=font)
    return sheet


def write_sheet(path: Path, scores: pl.DataFrame, decoded: dict) -> Path:
    buf = io.BytesIO()
    contact_sheet(scores, decoded).save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
