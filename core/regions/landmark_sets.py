"""mediapipe FaceMesh landmark sets as ordered outlines (pure functions on edge lists).

mediapipe ships each feature (`FACEMESH_LIPS`, `FACEMESH_LEFT_EYE`, ...) as an unordered set of
edges. A polygon needs its vertices in order: every connected component of such an edge set is
either a closed loop (eyes, irises, each lip contour, face oval) or an open path (the upper and
lower line of an eyebrow), and is walked here. The sets themselves are read from mediapipe, never
retyped.
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache

import numpy as np

from ..shading.topology import mesh_connections


def _components(edges) -> list[tuple[set[int], dict[int, set[int]]]]:
    adj: dict[int, set[int]] = defaultdict(set)
    for a, b in edges:
        if a != b:
            adj[int(a)].add(int(b))
            adj[int(b)].add(int(a))
    seen, parts = set(), []
    for start in sorted(adj):
        if start in seen:
            continue
        comp, stack = set(), [start]
        while stack:
            v = stack.pop()
            if v not in comp:
                comp.add(v)
                stack.extend(adj[v] - comp)
        seen |= comp
        parts.append((comp, {v: adj[v] for v in comp}))
    return parts


def _walk(adj: dict[int, set[int]], start: int) -> list[int]:
    order, prev, v = [start], None, start
    while True:
        nxt = sorted(adj[v] - {prev})
        if not nxt or nxt[0] == start or nxt[0] in order:
            return order
        prev, v = v, nxt[0]
        order.append(v)


def outlines(edges) -> tuple[list[list[int]], list[list[int]]]:
    """(loops, paths): every component of an edge set walked in order. Loops start at their
    smallest index; paths at their smaller end. ValueError for a branching component (the nose)."""
    loops, paths = [], []
    for comp, adj in _components(edges):
        degrees = {v: len(adj[v]) for v in comp}
        if max(degrees.values()) > 2:
            raise ValueError(f"edge set branches at {sorted(v for v, d in degrees.items() if d > 2)}: not an outline")
        ends = sorted(v for v, d in degrees.items() if d == 1)
        if ends:
            paths.append(_walk(adj, ends[0]))
        else:
            loops.append(_walk(adj, min(comp)))
    return loops, paths


def vertices(edges) -> list[int]:
    return sorted({int(v) for e in edges for v in e})


@lru_cache(maxsize=1)
def face_mesh_sets() -> dict[str, list]:
    """The outlines fmu's mesh parser fills, from mediapipe's connection sets (`mesh_connections`):
    lips: its 2 loops (outer and inner contour, told apart per face by area), eyes and irises:
    1 loop each, eyebrows: 2 paths each, face oval: 1 loop, nose: its vertex list (a branching
    graph: bridge plus both wings; its region is their convex hull)."""
    fm = mesh_connections
    sets = {"lips": outlines(fm("LIPS"))[0], "nose": vertices(fm("NOSE")), "face_oval": outlines(fm("FACE_OVAL"))[0][0]}
    for side in ("LEFT", "RIGHT"):
        sets[f"{side.lower()}_eye"] = outlines(fm(f"{side}_EYE"))[0][0]
        sets[f"{side.lower()}_iris"] = outlines(fm(f"{side}_IRIS"))[0][0]
        sets[f"{side.lower()}_eyebrow"] = outlines(fm(f"{side}_EYEBROW"))[1]
    return sets


def polygon_area(points: np.ndarray) -> float:
    """Signed shoelace area of a closed polygon (N, 2)."""
    x, y = np.asarray(points, dtype=np.float64).T
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def band_polygon(path_a: np.ndarray, path_b: np.ndarray) -> np.ndarray:
    """The polygon between two open paths (an eyebrow's two lines): path a, then path b in the
    direction that closes it without crossing (the larger area of the two closings)."""
    forward = np.concatenate([path_a, path_b])
    backward = np.concatenate([path_a, path_b[::-1]])
    return max((forward, backward), key=lambda p: abs(polygon_area(p)))


def split_at_corners(loop: list[int], points: np.ndarray, across: np.ndarray) -> tuple[list[int], list[int]]:
    """A closed contour cut at its two extreme vertices along `across` (the mouth corners):
    the two arcs, each from one corner to the other, corners included."""
    proj = np.asarray(points, dtype=np.float64)[loop, :2] @ across
    i, j = sorted((int(np.argmin(proj)), int(np.argmax(proj))))
    first = loop[i:j + 1]
    second = loop[j:] + loop[:i + 1]
    return first, second
