"""The face image the CLIP image encoder sees, in the two styles adapters were trained with.

- "aligned": the 224² ArcFace-template crop (h94 IP-Adapter-FaceID-PlusV2 and fmu's own
  training): each backend's `align`.
- "wide": the Face-MakeUpV2 authors' crop (`rtn_face_get` in their utils/face_extraction_v5.py,
  factor 3 in their demo): the bounding box of the detector's landmarks, its centre kept and its
  longer side times `factor` taken as a square, clipped to the image (so it may stop being square
  at a border), resized to 512² with OpenCV's bilinear resize; no rotation. It is stored at 224²
  with PIL bicubic, which is exactly what `CLIPImageProcessor` does to a square 512² image, so
  the encoder input is unchanged and the cache stays small.

The same landmark box, times `FRAME_SCALE` (their demo's `shadingsize_scale_factor`), is the
authors' generation frame: the photo region their DECA shading is rendered in, so the region a
generated image shows (`face_frame_box`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

CROP_STYLES = ("aligned", "wide")
WIDE_FACTOR = 3.0
WIDE_SIDE = 512      # the authors' resize
STORED_SIDE = 224    # CLIP ViT input side
FRAME_SCALE = 5.0    # the authors' demo default for the shading (generation) frame


def _landmark_box(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(centre x, centre y, longer side) of the landmarks' bounding box: both crops start here."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    (min_x, min_y), (max_x, max_y) = pts.min(axis=0), pts.max(axis=0)
    return (min_x + max_x) / 2, (min_y + max_y) / 2, max(max_x - min_x, max_y - min_y)


def wide_box(landmarks: np.ndarray, shape: tuple[int, int], factor: float = WIDE_FACTOR) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of the authors' crop, with their int() truncation and clipping."""
    h, w = shape[:2]
    cx, cy, extent = _landmark_box(landmarks)
    side = extent * factor
    return (max(0, int(cx - side / 2)), max(0, int(cy - side / 2)),
            min(w, int(cx + side / 2)), min(h, int(cy + side / 2)))


def wide_crop(image: np.ndarray, landmarks: np.ndarray, factor: float = WIDE_FACTOR) -> np.ndarray:
    import cv2  # deferred: heavy (OpenCV), only the wide style needs it

    x1, y1, x2, y2 = wide_box(landmarks, image.shape, factor)
    crop = cv2.resize(np.ascontiguousarray(image[y1:y2, x1:x2]), (WIDE_SIDE, WIDE_SIDE))
    return np.asarray(Image.fromarray(crop).resize((STORED_SIDE, STORED_SIDE), Image.Resampling.BICUBIC))


def face_frame_box(landmarks: np.ndarray, shape: tuple[int, ...], scale: float = FRAME_SCALE) -> tuple[int, int, int]:
    """(left, top, side): the square around the landmarks' box centre with side = its longer
    extent x `scale`, like the authors' shading crop. Where they clip at the border and then
    stretch the clipped box to a square, this one stays square: it slides back inside the image
    and shrinks only to the image's shorter side, so faces are never distorted."""
    h, w = shape[:2]
    cx, cy, extent = _landmark_box(landmarks)
    side = max(1, min(int(round(max(extent, 1.0) * scale)), h, w))
    left = int(np.clip(round(cx - side / 2), 0, w - side))
    top = int(np.clip(round(cy - side / 2), 0, h - side))
    return left, top, side
