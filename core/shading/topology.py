"""Triangles for the mediapipe face mesh, derived from its edge list.

mediapipe ships the 468-point tesselation only as edges (`FACEMESH_TESSELATION`, in the Tasks
API `FACE_LANDMARKS_TESSELATION`). Every
triangle of the mesh is a 3-clique of that edge graph, but not every 3-clique is a
triangle: a 3-cycle that encloses other vertices ("separating triangle") is a loop drawn
around a fan, not a face. In a manifold mesh an edge borders at most two faces, so each
edge of a separating 3-cycle (interior edges, with a real face on each side) is claimed
by at least three cliques, while a true face next to it shares only one such edge. We
therefore drop the cliques whose three edges are ALL claimed three or more times, recount,
and repeat until nothing changes. (Removing-the-vertices-disconnects is not a usable test:
it also fires on a true face next to a boundary vertex of degree 2.) On mediapipe 0.10.21
this removes 2 of 854 cliques, (49, 64, 129) and (279, 294, 358), leaving 852 faces with
every edge in 1 (border) or 2 (interior) triangles and Euler characteristic -2: a disk
with three holes (two eyes, mouth).

The eye holes are then closed with a fan around the iris centre (refined landmarks 468 and
473), so the render reads as one surface like a FLAME head; the mouth stays open because
an open mouth is expression the condition image should carry (a closed mouth's inner
contour is degenerate and covers no pixels anyway).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from functools import cache, lru_cache

import numpy as np

# Refined-landmark iris centres (mediapipe indices 468 = subject's right, 473 = left).
RIGHT_IRIS_CENTRE = 468
LEFT_IRIS_CENTRE = 473


def _adjacency(edges: np.ndarray) -> dict[int, set[int]]:
    adj: dict[int, set[int]] = defaultdict(set)
    for a, b in np.asarray(edges).tolist():
        if a != b:
            adj[a].add(b)
            adj[b].add(a)
    return adj


def triangles_from_edges(edges: np.ndarray) -> np.ndarray:
    """Faces of a planar triangle mesh given as an undirected edge list (either direction,
    duplicates allowed). Returns (T, 3) int64 sorted rows, orientation NOT yet consistent."""
    adj = _adjacency(edges)
    cliques = sorted({tuple(sorted((a, b, c)))
                      for a in adj for b in adj[a] if b > a
                      for c in adj[a] & adj[b] if c > b})
    faces = list(cliques)
    while True:
        count = edge_face_counts(faces)
        kept = [t for t in faces
                if min(count[e] for e in itertools.combinations(t, 2)) < 3]
        if len(kept) == len(faces):
            break
        faces = kept
    return np.asarray(faces, dtype=np.int64).reshape(-1, 3)


def orient_consistently(triangles: np.ndarray) -> np.ndarray:
    """Re-wind triangles so every interior edge is walked in opposite directions by its two
    faces (breadth-first propagation from the first triangle of each component). The global
    sign is arbitrary; `mesh_normals` fixes it per mesh against the camera."""
    tris = [list(t) for t in np.asarray(triangles).tolist()]
    by_edge: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, t in enumerate(tris):
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            by_edge[(min(a, b), max(a, b))].append(i)
    done = [False] * len(tris)
    for seed in range(len(tris)):
        if done[seed]:
            continue
        done[seed] = True
        queue = [seed]
        while queue:
            i = queue.pop()
            t = tris[i]
            for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
                for j in by_edge[(min(a, b), max(a, b))]:
                    if done[j]:
                        continue
                    u = tris[j]
                    # The neighbour must walk the shared edge b->a; if it walks a->b, flip it.
                    if any((u[k], u[(k + 1) % 3]) == (a, b) for k in range(3)):
                        u[1], u[2] = u[2], u[1]
                    done[j] = True
                    queue.append(j)
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def boundary_loops(triangles: np.ndarray) -> list[list[int]]:
    """Closed vertex loops along the edges used by exactly one (consistently wound) triangle."""
    count: dict[tuple[int, int], int] = defaultdict(int)
    for t in np.asarray(triangles).tolist():
        for a, b in itertools.combinations(sorted(t), 2):
            count[(a, b)] += 1
    nxt: dict[int, int] = {}
    for t in np.asarray(triangles).tolist():
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            if count[(min(a, b), max(a, b))] == 1:
                nxt[a] = b
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(loop)
    return loops


def edge_face_counts(triangles: np.ndarray) -> dict[tuple[int, int], int]:
    count: dict[tuple[int, int], int] = defaultdict(int)
    for t in np.asarray(triangles).tolist():
        for a, b in itertools.combinations(sorted(t), 2):
            count[(a, b)] += 1
    return dict(count)


@cache
def mesh_connections(name: str) -> frozenset[tuple[int, int]]:
    """One of mediapipe's edge sets of the face mesh: TESSELATION, LIPS, LEFT_EYE, NOSE, RIGHT_IRIS, ...

    The legacy `FACEMESH_{name}` where the legacy wheel is installed, else the current mediapipe's
    Tasks `FaceLandmarksConnections.FACE_LANDMARKS_{name}` (mediapipe 1.2.2: the same edges in every
    set; the 0.10.21 Tasks class lacks NOSE, hence legacy first)."""
    try:
        # deferred: heavy (mediapipe)
        from mediapipe.python.solutions import face_mesh_connections as legacy

        return frozenset(getattr(legacy, f"FACEMESH_{name}"))
    except ImportError:  # mediapipe without `solutions` (Python 3.13+)
        # deferred: heavy (mediapipe)
        from mediapipe.tasks.python.vision.face_landmarker import FaceLandmarksConnections

        return frozenset((c.start, c.end) for c in getattr(FaceLandmarksConnections, f"FACE_LANDMARKS_{name}"))


@lru_cache(maxsize=1)
def mediapipe_tesselation_triangles() -> np.ndarray:
    """The 852 consistently wound faces of mediapipe's 468-point tesselation (eyes, mouth open)."""
    tris = orient_consistently(triangles_from_edges(np.asarray(sorted(mesh_connections("TESSELATION")))))
    tris.setflags(write=False)
    return tris


@lru_cache(maxsize=1)
def mediapipe_triangles() -> np.ndarray:
    """Tesselation faces plus the two eye fans (needs the 478 refined landmarks)."""
    base = mediapipe_tesselation_triangles()
    loops = boundary_loops(base)
    fans = []
    for eye_edges, centre in ((mesh_connections("RIGHT_EYE"), RIGHT_IRIS_CENTRE),
                              (mesh_connections("LEFT_EYE"), LEFT_IRIS_CENTRE)):
        eye_vertices = {v for e in eye_edges for v in e}
        loop = next(lp for lp in loops if set(lp) == eye_vertices)
        # The hole's loop runs along border edges in the direction the border faces walk
        # them; the fan must walk each edge the other way to keep the winding consistent.
        fans += [(loop[(i + 1) % len(loop)], loop[i], centre) for i in range(len(loop))]
    tris = np.concatenate([base, np.asarray(fans, dtype=np.int64)])
    tris.setflags(write=False)
    return tris
