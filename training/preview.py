"""DATA/preview.html: a look at the prepared data, each image with its masks overlaid in colour.

One self-contained page (JPEG data URIs, no fetched script or style, like the score report): per
row the image with every mask tinted and outlined in its phrase's colour, the caption, a legend
(phrase -> colour, auto or given), and the phrases left without a mask with their reason. Big
sets show an evenly spaced sample of `MAX_ROWS` rows. Where the masks cover a small part of the
photo, a second view zooms on them.
"""

from __future__ import annotations

import html
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fmu.core.errors import ImageError
from fmu.core.html_page import IMAGE_CHECK, jpeg_data_uri
from fmu.core.images import atomic_write_bytes, load_rgb

MAX_ROWS = 60
SIDE = 320
ALPHA = 0.45
FACE_COLOUR = (255, 255, 0)   # the outline of the face a row uses (of several in the photo)
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40), (255, 225, 25))


def sample_rows(n: int, limit: int = MAX_ROWS) -> list[int]:
    """All row indices, or `limit` evenly spaced ones (first and last included)."""
    if n <= limit:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


def overlay(image: np.ndarray, masks: list[np.ndarray], side: int = SIDE, face_box=None) -> np.ndarray:
    """The image scaled to fit side x side, each mask tinted (ALPHA) and outlined in PALETTE[k]
    (in the order of the row's masks: the legend's colours); `face_box` (x1, y1, x2, y2 in the
    image's pixels): the face used, outlined in FACE_COLOUR."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    for k, mask in enumerate(masks):
        small = cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_AREA) >= 128
        colour = np.array(PALETTE[k % len(PALETTE)], np.float32)
        out[small] = (1 - ALPHA) * out[small] + ALPHA * colour
        edge = small & ~cv2.erode(small.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        out[edge] = colour
    out = np.clip(out, 0, 255).astype(np.uint8)
    if face_box is not None:
        x1, y1, x2, y2 = (int(round(v * scale)) for v in face_box[:4])
        cv2.rectangle(out, (x1, y1), (x2, y2), FACE_COLOUR, 2)
    return out


def zoom_box(masks: list[np.ndarray], shape, margin: float = 1.4) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2): a square around all the masks (times `margin`) when they cover a small
    part of the photo, so that small regions (lips, eyes) can be seen; None otherwise."""
    if not masks:
        return None
    rows, cols = np.nonzero(np.logical_or.reduce(masks))
    if rows.size == 0:
        return None
    h, w = shape[:2]
    side = min(max(np.ptp(rows), np.ptp(cols)) * margin + 8, h, w)
    if side * side > 0.4 * h * w:
        return None
    cx, cy = (cols.min() + cols.max()) / 2, (rows.min() + rows.max()) / 2
    x1 = int(np.clip(round(cx - side / 2), 0, w - side))
    y1 = int(np.clip(round(cy - side / 2), 0, h - side))
    return x1, y1, x1 + int(side), y1 + int(side)


def _uri(image: np.ndarray) -> str:
    return jpeg_data_uri(image, quality=90)


def _path(out: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else out / p


def _row_section(out: Path, row: dict, report: dict) -> str:
    try:
        image = load_rgb(row["image"])
    except ImageError as exc:
        return f"<section><h3>{html.escape(str(row['id']))}</h3><p class='err'>{html.escape(str(exc))}</p></section>"
    masks, legend = [], []
    for entry in row.get("masks") or []:
        try:
            grey = np.asarray(Image.open(_path(out, entry["mask"])).convert("L"))
        except OSError as exc:
            legend.append(f"<li class='err'>{html.escape(entry.get('phrase') or '')}: {html.escape(str(exc))}</li>")
            continue
        masks.append(grey >= 128)
        colour = "#{:02x}{:02x}{:02x}".format(*PALETTE[(len(masks) - 1) % len(PALETTE)])
        source = "given" if Path(entry["mask"]).is_absolute() else "auto"
        phrase = entry.get("phrase") or f"tokens {entry.get('token_indices')}"
        nth = f" (#{entry['occurrence'] + 1})" if entry.get("occurrence") else ""
        legend.append(f"<li><span class='sw' style='background:{colour}'></span>{html.escape(phrase)}{nth} "
                      f"<span class='src'>{source}</span></li>")
    for item in report.get("phrases_unmasked") or []:
        legend.append(f"<li class='none'>{html.escape(item['phrase'])}: {html.escape(item['reason'])}</li>")
    name = html.escape(str(row["id"]))
    faces = report.get("num_faces") or 0
    images = f"<img src='{_uri(overlay(image, masks, face_box=report.get('face_box')))}' alt='{name}'>"
    if faces > 1:  # which of the photo's faces is the row's: the outlined one
        legend.append(f"<li class='faces'>{faces} faces in the photo: the outlined one (the largest) is used</li>")
    box = zoom_box(masks, image.shape)
    if box is not None:
        x1, y1, x2, y2 = box
        crop = overlay(image[y1:y2, x1:x2], [m[y1:y2, x1:x2] for m in masks], side=SIDE // 2 + SIDE // 4)
        images += f"<img class='zoom' src='{_uri(crop)}' alt='{name}, masked regions'>"
    return (f"<section><h3>{name}</h3><div class='row'>{images}"
            f"<div><p class='cap'>{html.escape(row.get('caption') or '')}</p><ul>{''.join(legend)}</ul></div>"
            f"</div></section>")


def _excluded_section(rows: list[dict]) -> str:
    """The rows left out (duplicates, several faces, no face, unreadable), each with its reason and,
    where the image decodes, a thumbnail with the face found outlined."""
    if not rows:
        return ""
    cells = []
    for r in rows[:MAX_ROWS]:
        try:
            thumb = overlay(load_rgb(r["image"]), [], side=SIDE // 2, face_box=r.get("face_box"))
            body = f"<img src='{_uri(thumb)}' alt='{html.escape(str(r['id']))}'>"
        except ImageError:
            body = "<div class='none'>no image</div>"
        why = f"{html.escape(r.get('status') or '')}: {html.escape(r.get('reason') or '')}"
        cells.append(f"<figure class='excluded'>{body}<figcaption><b>{html.escape(str(r['id']))}</b> {why}"
                     "</figcaption></figure>")
    more = f"<p>... {len(rows) - MAX_ROWS} more in report.parquet</p>" if len(rows) > MAX_ROWS else ""
    return f"<h2>Excluded ({len(rows)})</h2><div class='row wrap'>{''.join(cells)}</div>{more}"


def write_preview(out: Path, train_rows: list[dict], report_rows: list[dict], parser: str | None) -> Path:
    """Write DATA/preview.html for the prepared rows; returns its path."""
    out = Path(out)
    by_id = {r["id"]: r for r in report_rows}
    chosen = sample_rows(len(train_rows))
    sections = "".join(_row_section(out, train_rows[i], by_id.get(train_rows[i]["id"], {})) for i in chosen)
    left_out = [r for r in report_rows if r.get("status") != "ok"]
    failed = len(left_out)
    shown = f"{len(chosen)} of {len(train_rows)}" if len(chosen) < len(train_rows) else f"all {len(train_rows)}"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fmu prepare preview</title>
<style>
body{{font-family:sans-serif;margin:20px;color:#222}} .row{{display:flex;gap:14px;align-items:flex-start}}
img{{max-width:{SIDE}px;display:block}} section{{border-top:1px solid #ddd;padding-top:6px;margin-top:10px}}
.sw{{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:middle}}
ul{{list-style:none;padding:0;font-size:13px}} .src{{color:#888;font-size:11px}} .none{{color:#a60}}
.cap{{color:#555;font-size:13px;max-width:520px}} .wrap{{flex-wrap:wrap}} .faces{{color:#663}}
figure.excluded{{margin:0;width:{SIDE // 2}px;font-size:12px}}
.err{{color:#c00}} #img-check{{font-size:12px;color:#666}}
</style></head><body>
<h1>fmu prepare</h1>
<p>Showing {shown} usable rows{f'; {failed} excluded (below, and in report.parquet)' if failed else ''}.
Region parser: {html.escape(parser or 'none (given masks only)')}. The face a row uses is outlined in yellow.</p>
{sections}
{_excluded_section(left_out)}
{IMAGE_CHECK}
</body></html>
"""
    path = out / "preview.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
