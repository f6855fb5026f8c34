"""The cpu rasteriser against a brute-force reference, the render's silhouette on a real
photo, and (when pytorch3d imports) cpu vs pytorch3d."""

import numpy as np
import pytest
from scipy.spatial import ConvexHull
from skimage.draw import polygon

from fmu.core.images import to_square
from fmu.core.shading import render_cpu
from fmu.core.shading.light_fit import fit_sh
from fmu.core.shading.reconstruct import reconstruct
from fmu.core.shading.render import pytorch3d_available, render, vertex_normals


def _brute_force(xy, z, tris, h, w):
    """Per pixel, per triangle: solve for barycentrics, keep the nearest covering face."""
    face = np.full((h, w), -1)
    best = np.full((h, w), np.inf)
    for i in range(h):
        for j in range(w):
            p = np.array([j + 0.5, i + 0.5])
            for t, (a, b, c) in enumerate(tris):
                m = np.array([[xy[a, 0], xy[b, 0], xy[c, 0]], [xy[a, 1], xy[b, 1], xy[c, 1]], [1, 1, 1]])
                if abs(np.linalg.det(m)) < 1e-12:
                    continue
                lam = np.linalg.solve(m, [p[0], p[1], 1.0])
                if lam.min() >= -1e-7:
                    d = lam @ z[[a, b, c]]
                    if d < best[i, j]:
                        best[i, j], face[i, j] = d, t
    return face, best


def test_rasteriser_matches_brute_force_on_overlapping_random_triangles():
    rng = np.random.default_rng(0)
    h, w = 20, 24
    xy = rng.uniform(-3, 27, size=(30, 2))  # some vertices off-image: clipping is exercised
    z = rng.uniform(0, 10, size=30)
    tris = rng.choice(30, size=(12, 3), replace=True)
    face, bary, depth = render_cpu.rasterize(xy, z, tris, h, w)
    ref_face, ref_depth = _brute_force(xy, z, tris, h, w)
    assert np.array_equal(face >= 0, ref_face >= 0)
    assert np.allclose(depth[face >= 0], ref_depth[face >= 0], atol=1e-9)
    # Barycentrics reproduce the pixel centre.
    ii, jj = np.nonzero(face >= 0)
    corners = xy[tris[face[ii, jj]]]                       # (P, 3, 2)
    centre = np.einsum("pk,pkc->pc", bary[ii, jj], corners)
    assert np.allclose(centre, np.stack([jj + 0.5, ii + 0.5], 1), atol=1e-9)


def test_chunking_does_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 64, size=(40, 2))
    z = rng.uniform(0, 10, size=40)
    tris = rng.choice(40, size=(30, 3))
    whole = render_cpu.rasterize(xy, z, tris, 64, 64)
    monkeypatch.setattr(render_cpu, "_MAX_CANDIDATES", 500)
    chunked = render_cpu.rasterize(xy, z, tris, 64, 64)
    assert np.array_equal(whole[0], chunked[0]) and np.allclose(whole[2], chunked[2])


def test_covered_pixels_equal_the_area_of_a_large_triangle():
    xy = np.array([[10.2, 5.3], [400.7, 60.1], [120.4, 390.9]])
    face, _, _ = render_cpu.rasterize(xy, np.zeros(3), np.array([[0, 1, 2]]), 400, 420)
    area = 0.5 * abs(np.cross(xy[1] - xy[0], xy[2] - xy[0]))
    perimeter = sum(np.linalg.norm(xy[k] - xy[k - 1]) for k in range(3))
    assert abs((face >= 0).sum() - area) < perimeter  # sampling error lives on the border


@pytest.fixture(scope="module")
def astronaut_face(astronaut):
    frame = to_square(astronaut, 512)
    mesh = reconstruct(frame)
    return frame, mesh, fit_sh(frame, mesh)


def test_silhouette_covers_the_face(astronaut_face):
    _, mesh, sh = astronaut_face
    image = render(mesh, sh, 512, backend="cpu")
    assert image.shape == (512, 512) and image.dtype == np.uint8
    xy = mesh.vertices[:468, :2]
    hull = xy[ConvexHull(xy).vertices]
    hull_mask = np.zeros((512, 512), dtype=bool)
    rr, cc = polygon(hull[:, 1] - 0.5, hull[:, 0] - 0.5, shape=hull_mask.shape)
    hull_mask[rr, cc] = True
    rendered = image > 0
    iou = (rendered & hull_mask).sum() / (rendered | hull_mask).sum()
    assert iou >= 0.8, iou
    assert rendered.sum() > 5000  # the face is ~100 px wide in this 512 frame


def test_render_at_another_size_is_the_same_picture_scaled(astronaut_face):
    _, mesh, sh = astronaut_face
    big = render(mesh, sh, 512, backend="cpu") > 0
    small = render(mesh, sh, 256, backend="cpu") > 0
    # Every 2x2 block of the big mask mostly agrees with the small mask.
    pooled = big.reshape(256, 2, 256, 2).mean(axis=(1, 3))
    agree = ((pooled >= 0.5) == small).mean()
    assert agree > 0.995


def test_vertex_normals_face_the_camera(astronaut_face):
    _, mesh, _ = astronaut_face
    n = vertex_normals(mesh.vertices, mesh.triangles)
    assert np.allclose(np.linalg.norm(n[:468], axis=1), 1.0)
    assert n[1, 2] < -0.8  # nose tip looks at the camera (z away, so negative)
    # Flipping the winding of every face must not flip the normals.
    assert np.allclose(vertex_normals(mesh.vertices, mesh.triangles[:, ::-1]), n)


@pytest.mark.skipif(not pytorch3d_available(), reason="pytorch3d is not importable here (no Linux wheels on PyPI)")
def test_pytorch3d_and_cpu_backends_agree(astronaut_face):
    _, mesh, sh = astronaut_face
    cpu = render(mesh, sh, 512, backend="cpu").astype(int)
    p3d = render(mesh, sh, 512, backend="pytorch3d").astype(int)
    both = (cpu > 0) & (p3d > 0)
    assert ((cpu > 0) != (p3d > 0)).sum() <= 0.01 * both.sum()   # edge pixels may differ
    assert np.abs(cpu[both] - p3d[both]).max() <= 2
