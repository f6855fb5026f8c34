"""A vectorised numpy z-buffer rasteriser (orthographic, pixel-centre sampling).

No package on PyPI fits (pytorch3d has no Linux wheels; the pure-python renderers on the
index loop per pixel), and the mesh is small (~900 triangles), so the method's own piece is
written here in about sixty lines: every (triangle, pixel-in-its-bounding-box) pair is
generated at once, tested with edge functions, and the nearest candidate per pixel wins.
Work is chunked by triangles so memory stays bounded for very large renders.

Conventions match `FaceMesh`: x right, y down in pixels, pixel (row i, col j) is sampled at
(j + 0.5, i + 0.5); smaller z is nearer. Backfaces are not culled (the z-buffer decides),
as in the pytorch3d backend.
"""

from __future__ import annotations

import numpy as np

# Candidates per chunk (< 2^22, see the key packing): ~8 float64/int64 arrays, ~100 MB peak.
_MAX_CANDIDATES = 1_000_000
# A pixel centre exactly on a shared edge belongs to both triangles; tiny tolerance keeps
# edges watertight under floating point, the z-buffer picks one.
_EPS = 1e-7


def rasterize(xy: np.ndarray, z: np.ndarray, triangles: np.ndarray, height: int, width: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (face (H, W) int64, -1 = background; bary (H, W, 3) float64; depth (H, W) float64, inf = background)."""
    xy = np.asarray(xy, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    tri = np.asarray(triangles, dtype=np.int64)
    face = np.full(height * width, -1, dtype=np.int64)
    bary = np.zeros((height * width, 3), dtype=np.float64)
    depth = np.full(height * width, np.inf, dtype=np.float64)
    if len(tri) == 0:
        return face.reshape(height, width), bary.reshape(height, width, 3), depth.reshape(height, width)

    p = xy[tri]                                     # (T, 3, 2)
    # Pixel columns j whose centre j + 0.5 lies in [min x, max x], clipped to the image.
    x0 = np.clip(np.ceil(p[..., 0].min(1) - 0.5), 0, width).astype(np.int64)
    x1 = np.clip(np.floor(p[..., 0].max(1) - 0.5), -1, width - 1).astype(np.int64)
    y0 = np.clip(np.ceil(p[..., 1].min(1) - 0.5), 0, height).astype(np.int64)
    y1 = np.clip(np.floor(p[..., 1].max(1) - 0.5), -1, height - 1).astype(np.int64)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    area = ((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1])
            - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1]))
    keep = np.flatnonzero((bw > 0) & (bh > 0) & np.isfinite(area) & (np.abs(area) > 1e-12))
    counts = bw[keep] * bh[keep]

    # Chunk boundaries over the kept triangles so no chunk exceeds _MAX_CANDIDATES pairs.
    ends = np.cumsum(counts)
    start = 0
    while start < len(keep):
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + _MAX_CANDIDATES, side="right")))
        _rasterize_chunk(keep[start:stop], counts[start:stop], p, z[tri], area, x0, y0, bw,
                         width, face, bary, depth)
        start = stop
    return face.reshape(height, width), bary.reshape(height, width, 3), depth.reshape(height, width)


def _rasterize_chunk(ids, counts, p, tz, area, x0, y0, bw, width, face, bary, depth) -> None:
    total = int(counts.sum())
    t = np.repeat(ids, counts)                                # triangle of each candidate
    local = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    px = x0[t] + local % bw[t]
    py = y0[t] + local // bw[t]
    cx, cy = px + 0.5, py + 0.5
    a, b, c = p[t, 0], p[t, 1], p[t, 2]
    # Edge functions: w0 is the weight of vertex 0 (area of the sub-triangle opposite it).
    w0 = ((b[:, 0] - cx) * (c[:, 1] - cy) - (c[:, 0] - cx) * (b[:, 1] - cy)) / area[t]
    w1 = ((c[:, 0] - cx) * (a[:, 1] - cy) - (a[:, 0] - cx) * (c[:, 1] - cy)) / area[t]
    w2 = 1.0 - w0 - w1
    inside = (w0 >= -_EPS) & (w1 >= -_EPS) & (w2 >= -_EPS)
    if not inside.any():
        return
    t, w = t[inside], np.stack([w0, w1, w2], axis=1)[inside]
    pix = (py * width + px)[inside]
    zc = (w * tz[t]).sum(axis=1)
    # Nearest candidate per pixel in O(n): pack (quantised depth, candidate id) into one
    # int64 and take the per-pixel minimum with ufunc.at. 2^40 depth steps over the chunk's
    # depth range is far finer than float32 vertex precision.
    lo, hi = zc.min(), zc.max()
    zq = np.rint((zc - lo) / max(hi - lo, 1e-30) * float(2 ** 40 - 1)).astype(np.int64)
    key = (zq << 22) | np.arange(len(zc), dtype=np.int64)  # chunks hold < 2^22 candidates
    best = np.full(len(depth), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, pix, key)
    hit = np.flatnonzero(best != np.iinfo(np.int64).max)
    win = best[hit] & ((1 << 22) - 1)
    nearer = zc[win] < depth[hit]
    hit, win = hit[nearer], win[nearer]
    depth[hit] = zc[win]
    face[hit] = t[win]
    bary[hit] = w[win]
