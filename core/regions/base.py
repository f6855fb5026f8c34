"""The region-parser interface: an RGB image and its face -> named region masks at the image's size.

A parser works in a *face frame*: the square around the face box times `FRAME_SCALE` (padded with
black where it leaves the photo), resized to `WORK_SIDE`. Its masks are pasted back into the
photo, so a parser's cost does not grow with the photo's size and, in a photo of several people,
it parses the face the row was analysed with.

For every region it does not return, a parser says why, as "kind: detail" with kind one of
`NOT_SUPPORTED` (the parser has no such region), `NOT_VISIBLE` (occluded, or no face found by
the parser) or `EMPTY` (fewer than `MIN_PIXELS` pixels in the photo).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from .names import REGIONS

NOT_SUPPORTED, NOT_VISIBLE, EMPTY = "not_supported", "not_visible", "empty"
MIN_PIXELS = 16          # a smaller region is reported empty (it cannot survive the attention-map resize)
FRAME_SCALE = 2.6        # face box x this = the face frame: head, hair and neck, like a CelebA-HQ crop
FRAME_RAISE = 0.15       # ... its centre this many box sides above the box's (hair is above the face)
WORK_SIDE = 512          # side the face frame is parsed at (the SegFormer face parsers' input)


@dataclass
class RegionMasks:
    """Boolean (H, W) masks by region name, and a reason for every other known region."""

    shape: tuple[int, int]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def union(self, regions) -> tuple[np.ndarray | None, str | None]:
        """(mask, None) for the union of the regions the parser produced, or (None, reason) when
        none of them was: the first region's reason."""
        found = [self.masks[r] for r in regions if r in self.masks]
        if found:
            return np.logical_or.reduce(found), None
        first = next(iter(regions))
        return None, self.missing.get(first, f"{NOT_SUPPORTED}: no region {first!r}")


class RegionParser(Protocol):
    name: str                        # "mesh", "segformer:<folder or hub id>"
    regions: tuple[str, ...]         # what it can produce (subset of names.REGIONS)

    def identity(self) -> dict:
        """What decides its output (model files, versions): part of the mask file names."""

    def parse(self, image_rgb: np.ndarray, box=None) -> RegionMasks:
        """Masks of the face in `box` (x1, y1, x2, y2 in pixels; None: the whole photo)."""


def finish(shape: tuple[int, int], masks: dict[str, np.ndarray], missing: dict[str, str],
           parser: str, supported) -> RegionMasks:
    """The parser's result in the interface's terms: masks under MIN_PIXELS become EMPTY, every
    known region neither produced nor explained is NOT_SUPPORTED by this parser."""
    out = RegionMasks(shape=tuple(shape))
    for name, mask in masks.items():
        count = int(np.count_nonzero(mask))
        if count >= MIN_PIXELS:
            out.masks[name] = mask
        else:
            out.missing[name] = f"{EMPTY}: the {parser} parser found {count} pixel(s) of {name}"
    out.missing.update({k: v for k, v in missing.items() if k not in out.masks})
    for name in REGIONS:
        if name in out.masks or name in out.missing:
            continue
        out.missing[name] = (f"{EMPTY}: the {parser} parser found no {name}" if name in supported
                             else f"{NOT_SUPPORTED}: the {parser} parser has no {name} region")
    return out


def all_missing(shape: tuple[int, int], reason: str, parser: str, supported) -> RegionMasks:
    """Every region missing: `reason` for the ones the parser supports (e.g. it found no face)."""
    return finish(shape, {}, {name: reason for name in supported}, parser, supported)


# ----------------------------------------------------------------------------- the face frame

@dataclass(frozen=True)
class FaceFrame:
    """The square (left, top, side) of the photo a parser works in; may extend past the photo."""

    left: int
    top: int
    side: int
    shape: tuple[int, int]   # the photo's (height, width)

    @classmethod
    def around(cls, box, shape: tuple[int, ...], scale: float = FRAME_SCALE) -> FaceFrame:
        h, w = int(shape[0]), int(shape[1])
        if box is None:  # the whole photo, padded to a square
            side = max(h, w)
            return cls((w - side) // 2, (h - side) // 2, side, (h, w))
        x1, y1, x2, y2 = (float(v) for v in box)
        side = max(8, round(max(x2 - x1, y2 - y1) * scale))
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 - FRAME_RAISE * max(x2 - x1, y2 - y1)
        return cls(round(cx - side / 2), round(cy - side / 2), side, (h, w))

    def crop(self, image: np.ndarray, size: int = WORK_SIDE) -> np.ndarray:
        """The frame's pixels (black outside the photo) resized to size x size."""
        h, w = self.shape
        x0, y0, x1, y1 = self.left, self.top, self.left + self.side, self.top + self.side
        inner = image[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
        pad = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
        square = cv2.copyMakeBorder(np.ascontiguousarray(inner), *pad, cv2.BORDER_CONSTANT, value=0)
        interp = cv2.INTER_AREA if self.side > size else cv2.INTER_CUBIC
        return cv2.resize(square, (size, size), interpolation=interp)

    def paste(self, mask: np.ndarray) -> np.ndarray:
        """A boolean mask of the (size x size) frame -> the same region in the photo (H, W)."""
        h, w = self.shape
        grey = cv2.resize(mask.astype(np.uint8) * 255, (self.side, self.side), interpolation=cv2.INTER_LINEAR)
        out = np.zeros((h, w), dtype=bool)
        x0, y0 = max(self.left, 0), max(self.top, 0)
        x1, y1 = min(self.left + self.side, w), min(self.top + self.side, h)
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = grey[y0 - self.top:y1 - self.top, x0 - self.left:x1 - self.left] >= 128
        return out

    def to_photo(self, points: np.ndarray, size: int = WORK_SIDE) -> np.ndarray:
        """(N, 2+) frame pixel coordinates -> photo pixel coordinates (x, y; z scaled alike)."""
        p = np.asarray(points, dtype=np.float64).copy()
        s = self.side / size
        p[:, 0] = p[:, 0] * s + self.left
        p[:, 1] = p[:, 1] * s + self.top
        if p.shape[1] > 2:
            p[:, 2:] *= s
        return p
