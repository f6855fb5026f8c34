"""The offline `mesh` parser: mediapipe FaceMesh landmarks -> face-region polygons.

Landmarks come from the shading channel's reconstructor (`core.shading.reconstruct`, one
mediapipe graph per process for both), run on the face frame (`base.FaceFrame`). Regions:

- features, filled from mediapipe's own landmark sets (`landmark_sets.face_mesh_sets`): eyes
  (lid loops), irises (the circle through the iris ring, cut to the eye), eyebrows (the band
  between their two lines), nose (hull of its bridge and wings), upper / lower lip (each lip
  contour cut at the mouth corners) and the mouth opening. Features are painted far to near by
  landmark depth, so on a turned head the nose hides the far eye and no two features overlap;
  a feature whose landmarks are mostly behind the surface (z-buffer) is `not_visible`.
- the face: the visible surface of the mesh (`core.shading.topology` triangles, rasterised by
  `core.shading.render_cpu`) plus the mouth opening; skin = face minus eyes, brows and mouth.
- skin zones, cut from the face in the head's own frame (u across, from the subject's right eye
  to the left one; v down): forehead above the brows' upper line, cheeks between the eyes and
  the mouth corners beside the nose, lower face below the nose, moustache between nose and upper
  lip, chin below the lower lip (both as wide as the mouth plus a quarter on each side).
- hair, approximate: mediapipe's selfie (person) segmentation, which ships in the same wheel,
  minus the face, above the mouth and within a head's width: it includes ears and headwear and
  misses long hair below the mouth.

Not landmarks, so not produced: ears, earrings, eyeglasses, hat, neck, necklace, clothes.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import cv2
import numpy as np

from ..errors import NoFaceError
from ..native_log import quiet_native_stderr
from ..shading.reconstruct import get_reconstructor, mesh_api
from ..shading.render_cpu import rasterize
from ..shading.topology import mediapipe_triangles
from .base import (
    FRAME_SCALE,
    NOT_VISIBLE,
    WORK_SIDE,
    FaceFrame,
    RegionMasks,
    all_missing,
    finish,
)
from .landmark_sets import band_polygon, face_mesh_sets, polygon_area, split_at_corners

MESH_VERSION = 1           # bump when the region geometry changes: it names the cached mask files
VISIBLE_FRACTION = 0.5     # a feature with fewer of its landmarks on the visible surface is not visible
ZONE_MARGIN = 0.25         # moustache / chin: the mouth's width plus this fraction on each side
HEAD_WIDTH = 1.8           # hair: within this many face widths, centred on the face
FEATURES = ("left_eye", "right_eye", "left_eyebrow", "right_eyebrow", "nose", "upper_lip", "lower_lip",
            "mouth_opening")
MESH_REGIONS = ("face", "skin", "forehead", "cheeks", "left_cheek", "right_cheek", "eyebrows", "left_eyebrow",
                "right_eyebrow", "eyes", "left_eye", "right_eye", "irises", "nose", "mouth", "lips", "upper_lip",
                "lower_lip", "moustache", "chin", "lower_face", "hair")


def _fill(polygon: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    # fillPoly takes integer vertices: 4 fractional bits keep sub-pixel landmark positions
    pts = np.round(np.asarray(polygon, dtype=np.float64)[:, :2] * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n < 1e-9:
        raise NoFaceError("degenerate face landmarks (eyes coincide)")
    return v / n


class Features(NamedTuple):
    polygons: dict[str, np.ndarray]   # (N, 2) outline of each of FEATURES
    landmarks: dict[str, list[int]]   # the landmark indices behind each
    across: np.ndarray                # the head's u axis in the image: subject's right eye -> left eye
    outer_upper: np.ndarray           # (N, 2) the upper and lower arcs of the outer lip contour,
    outer_lower: np.ndarray           # corner to corner


def feature_polygons(points: np.ndarray) -> Features:
    """The features' outlines from 478 landmarks (x, y pixels first)."""
    s, p = face_mesh_sets(), np.asarray(points, dtype=np.float64)
    across = _unit(p[s["left_eye"], :2].mean(0) - p[s["right_eye"], :2].mean(0))
    down = np.array([-across[1], across[0]])
    polys, sources = {}, {}
    for side in ("left", "right"):
        polys[f"{side}_eye"], sources[f"{side}_eye"] = p[s[f"{side}_eye"], :2], s[f"{side}_eye"]
        a, b = s[f"{side}_eyebrow"]
        polys[f"{side}_eyebrow"] = band_polygon(p[a, :2], p[b, :2])
        sources[f"{side}_eyebrow"] = a + b
    hull = cv2.convexHull(p[s["nose"], :2].astype(np.float32))[:, 0].astype(np.float64)
    polys["nose"], sources["nose"] = hull, s["nose"]
    outer, inner = sorted(s["lips"], key=lambda loop: -abs(polygon_area(p[loop, :2])))
    arcs = {}
    for name, loop in (("outer", outer), ("inner", inner)):
        one, two = split_at_corners(loop, p, across)
        # the upper arc lies higher in the head's frame (smaller v)
        upper, lower = sorted((one, two), key=lambda arc: float((p[arc, :2] @ down).mean()))
        arcs[name] = (upper, lower)
    for k, lip in enumerate(("upper_lip", "lower_lip")):
        out_arc, in_arc = arcs["outer"][k], arcs["inner"][k]
        polys[lip] = band_polygon(p[out_arc, :2], p[in_arc, :2])
        sources[lip] = out_arc + in_arc
    polys["mouth_opening"], sources["mouth_opening"] = p[inner, :2], inner
    return Features(polys, sources, across, p[arcs["outer"][0], :2], p[arcs["outer"][1], :2])


def _visible_vertices(points: np.ndarray, surface_depth: np.ndarray, tolerance: float) -> np.ndarray:
    """Per landmark: True when it is on (not behind) the rasterised surface at its pixel."""
    size = surface_depth.shape[0]
    x = np.clip(np.floor(points[:, 0]).astype(int), 0, size - 1)
    y = np.clip(np.floor(points[:, 1]).astype(int), 0, size - 1)
    depth = surface_depth[y, x]
    return ~np.isfinite(depth) | (points[:, 2] <= depth + tolerance)


def _line_under(u_points: np.ndarray, v_points: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The piecewise-linear curve v(u) through the points (flat beyond the ends), at u."""
    order = np.argsort(u_points)
    return np.interp(u, u_points[order], v_points[order])


def mesh_regions(points: np.ndarray, size: int, person: np.ndarray | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All mesh regions of one face, (size x size) boolean masks in the frame the 478 landmarks
    `points` (x, y, z pixels, z away from the camera) are in; `person`: a person mask of the same
    frame for the hair. Returns (masks, reasons for the regions not produced)."""
    p = np.asarray(points, dtype=np.float64)
    features = feature_polygons(p)
    polys, sources, across = features.polygons, features.landmarks, features.across
    down = np.array([-across[1], across[0]])
    face_id, _, depth = rasterize(p[:, :2], p[:, 2], mediapipe_triangles(), size, size)
    u_pts, v_pts = p[:, :2] @ across, p[:, :2] @ down
    width = float(np.ptp(u_pts[face_mesh_sets()["face_oval"]]))
    visible = _visible_vertices(p, depth, tolerance=0.03 * width)

    masks, missing = {}, {}
    labels = np.full((size, size), -1, np.int16)
    # far to near: a nearer feature covers a farther one (the nose over the far eye)
    order = sorted(range(len(FEATURES)), key=lambda i: -float(p[sources[FEATURES[i]], 2].mean()))
    for i in order:
        labels[_fill(polys[FEATURES[i]], size)] = i
    for i, name in enumerate(FEATURES):
        masks[name] = labels == i
        if visible[sources[name]].mean() < VISIBLE_FRACTION:
            missing[name] = f"{NOT_VISIBLE}: {name} is turned away from the camera"
            masks[name] = np.zeros((size, size), bool)
    s = face_mesh_sets()
    irises = np.zeros((size, size), bool)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for side in ("left", "right"):
        ring = p[s[f"{side}_iris"], :2]
        centre, radius = ring.mean(0), float(np.linalg.norm(ring - ring.mean(0), axis=1).mean())
        irises |= ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius ** 2) & masks[f"{side}_eye"]
    masks["irises"] = irises
    masks["eyes"] = masks["left_eye"] | masks["right_eye"]
    masks["eyebrows"] = masks["left_eyebrow"] | masks["right_eyebrow"]
    masks["lips"] = masks["upper_lip"] | masks["lower_lip"]
    masks["mouth"] = masks["lips"] | masks.pop("mouth_opening")
    missing.pop("mouth_opening", None)
    face = (face_id >= 0) | masks["mouth"] | masks["eyes"]
    masks["face"] = face
    masks["skin"] = face & ~masks["eyes"] & ~masks["eyebrows"] & ~masks["mouth"]

    # skin zones in the head's frame
    u, v = xx * across[0] + yy * across[1], xx * down[0] + yy * down[1]
    skin = masks["skin"]
    # each eyebrow's upper line (of its two): the forehead is the skin above both
    top_idx = np.array([i for side in ("left", "right")
                        for i in min(s[f"{side}_eyebrow"], key=lambda line: float(v_pts[line].mean()))])
    masks["forehead"] = skin & ~masks["nose"] & (v < _line_under(u_pts[top_idx], v_pts[top_idx], u))
    nose_idx, mouth_v = np.array(s["nose"]), float(v_pts[sources["upper_lip"]].mean())
    nose_lo, nose_hi = u_pts[nose_idx].min(), u_pts[nose_idx].max()
    for side, beside in (("left", u > nose_hi), ("right", u < nose_lo)):
        eye_bottom = float(v_pts[s[f"{side}_eye"]].max())
        masks[f"{side}_cheek"] = skin & ~masks["nose"] & beside & (v > eye_bottom) & (v < mouth_v)
    masks["cheeks"] = masks["left_cheek"] | masks["right_cheek"]
    below_nose = skin & ~masks["nose"] & (v > v_pts[nose_idx].max())
    masks["lower_face"] = below_nose
    outer_upper, outer_lower = features.outer_upper, features.outer_lower
    corners = np.concatenate([outer_upper, outer_lower]) @ across
    margin = ZONE_MARGIN * float(np.ptp(corners))
    under_mouth = (u > corners.min() - margin) & (u < corners.max() + margin)
    masks["moustache"] = below_nose & under_mouth & (v < _line_under(outer_upper @ across, outer_upper @ down, u))
    masks["chin"] = below_nose & under_mouth & (v > _line_under(outer_lower @ across, outer_lower @ down, u))
    if person is not None:
        centre = float(u_pts[s["face_oval"]].mean())
        masks["hair"] = person & ~face & (np.abs(u - centre) < HEAD_WIDTH * width / 2) & (v < mouth_v)
    return masks, missing


class MeshParser:
    """`mesh`: offline, from the landmarks of the mediapipe FaceMesh (see module doc)."""

    name = "mesh"
    regions = MESH_REGIONS

    def __init__(self, hair: bool = True):
        self._hair = hair
        self._person = None
        self._lock = threading.Lock()

    def identity(self) -> dict:
        import mediapipe  # deferred: heavy (mediapipe), loaded once the parser runs

        return {"parser": "mesh", "version": MESH_VERSION, "mediapipe": mediapipe.__version__,
                "hair": self._hair, "frame_scale": FRAME_SCALE, "work": WORK_SIDE}

    def _person_mask(self, frame_rgb: np.ndarray) -> np.ndarray:
        """mediapipe selfie segmentation (general model) of the face frame, > 0.5 = person."""
        with self._lock:  # the graph is not thread-safe; built once, on first use
            if self._person is None:
                # deferred: heavy (mediapipe), built on first use
                from mediapipe.python.solutions.selfie_segmentation import SelfieSegmentation

                with quiet_native_stderr():  # graph build and first inference log to fd 2
                    self._person = SelfieSegmentation(model_selection=0)
                    self._person.process(np.zeros((64, 64, 3), np.uint8))
            result = self._person.process(frame_rgb)
        return np.asarray(result.segmentation_mask) > 0.5

    def parse(self, image_rgb: np.ndarray, box=None) -> RegionMasks:
        shape = image_rgb.shape[:2]
        frame = FaceFrame.around(box, shape)
        crop = frame.crop(np.asarray(image_rgb, dtype=np.uint8))
        try:
            # the shading channel's graph, built on first use (a parser made only to check the
            # options builds nothing that a forked worker could inherit half-alive)
            points = get_reconstructor("mediapipe").landmarks(crop)
            # the selfie segmentation behind hair is a legacy solution: with the Tasks API (Python
            # 3.13+) hair is reported missing rather than guessed
            person = self._person_mask(crop) if self._hair and mesh_api() == "legacy" else None
            masks, missing = mesh_regions(points, WORK_SIDE, person)
        except NoFaceError as exc:
            return all_missing(shape, f"{NOT_VISIBLE}: the mesh parser found no face ({exc})", self.name, self.regions)
        return finish(shape, {k: frame.paste(m) for k, m in masks.items()}, missing, self.name, self.regions)
