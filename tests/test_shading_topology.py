"""Triangles derived from mediapipe's tesselation edges, and the generic clique filter."""

import itertools
from collections import Counter

import numpy as np

from fmu.core.shading.topology import (
    boundary_loops,
    edge_face_counts,
    mediapipe_tesselation_triangles,
    mediapipe_triangles,
    orient_consistently,
    triangles_from_edges,
)


def _edges_of(tris):
    return np.array(sorted({tuple(sorted(e)) for t in tris for e in itertools.combinations(t, 2)}))


def test_separating_clique_is_dropped_on_a_hand_made_mesh():
    # 4x4 grid, each square split along its diagonal: 18 faces. Put vertex 16 inside face
    # (5, 6, 10) and connect it to the three corners: (5, 6, 10) becomes a separating
    # 3-cycle, still a clique of the edge graph but no longer a face.
    grid = []
    for r, c in itertools.product(range(3), range(3)):
        a, b, d, e = 4 * r + c, 4 * r + c + 1, 4 * r + c + 4, 4 * r + c + 5
        grid += [(a, b, e), (a, e, d)]
    assert (5, 6, 10) in grid
    faces = [t for t in grid if t != (5, 6, 10)] + [(5, 6, 16), (6, 10, 16), (5, 10, 16)]
    edges = _edges_of(faces)
    got = {tuple(t) for t in triangles_from_edges(edges).tolist()}
    assert got == {tuple(sorted(t)) for t in faces}
    assert (5, 6, 10) not in got


def test_mediapipe_tesselation_faces_form_a_disk_with_three_holes():
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    tris = mediapipe_tesselation_triangles()
    edges = {tuple(sorted(e)) for e in FACEMESH_TESSELATION}
    counts = edge_face_counts(tris)
    # Every mediapipe edge is used, and by exactly one (border) or two (interior) faces.
    assert set(counts) == edges
    assert set(Counter(counts.values())) == {1, 2}
    # A triangulated disk with h holes has V - E + F = 1 - h: eyes and mouth give -2.
    vertices = {v for t in tris.tolist() for v in t}
    assert len(vertices) == 468
    assert len(vertices) - len(edges) + len(tris) == -2
    # 2E = 3F + border edges
    border = sum(1 for n in counts.values() if n == 1)
    assert 2 * len(edges) == 3 * len(tris) + border
    assert sorted(len(loop) for loop in boundary_loops(tris)) == [16, 16, 20, 36]


def test_faces_are_consistently_wound_and_eye_fans_close_the_eyes():
    tris = mediapipe_triangles()
    directed = Counter((t[i], t[(i + 1) % 3]) for t in tris.tolist() for i in range(3))
    assert max(directed.values()) == 1  # consistent winding: no directed edge walked twice
    assert len(tris) == len(mediapipe_tesselation_triangles()) + 32
    # Only the face oval (36) and the inner lips (20) remain open.
    assert sorted(len(loop) for loop in boundary_loops(tris)) == [20, 36]


def test_orientation_repairs_a_flipped_face():
    tris = np.array([[0, 1, 2], [2, 1, 3], [3, 1, 4]])
    broken = tris.copy()
    broken[1] = [1, 2, 3]  # walks 1->2 like face 0: inconsistent
    fixed = orient_consistently(broken)
    directed = Counter((t[i], t[(i + 1) % 3]) for t in fixed.tolist() for i in range(3))
    assert max(directed.values()) == 1
    assert fixed[0].tolist() == [0, 1, 2]
