"""Render a `FaceMesh` as the ShadingNet condition: SH-shaded, untextured, grey on black.

`render(mesh, sh, size)` draws the mesh's own frame (the image it was reconstructed from)
resized to size x size, orthographically, so the condition is aligned pixel for pixel with
that frame: `make_condition` reconstructs on the `to_square` frame, so render and
generated image share pixels. Two interchangeable rasterisers produce the per-pixel
normals: "cpu" (render_cpu.py, the default) and "pytorch3d" (only when importable);
"auto" takes pytorch3d when it imports, else cpu.

Face pixels are clipped to grey levels [1, 255] so the silhouette stays recoverable from
the image itself (a fully shadowed face pixel is 1, background is exactly 0).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache

import numpy as np

from .lighting import shade, view_normals
from .render_cpu import rasterize

BACKENDS = ("auto", "cpu", "pytorch3d")


@lru_cache(maxsize=1)
def pytorch3d_available() -> bool:
    if importlib.util.find_spec("pytorch3d") is None:
        return False
    try:
        import pytorch3d.renderer  # noqa: F401  (deferred: optional; this import is the probe)
    except Exception:  # noqa: BLE001  a build for another torch fails with OSError/RuntimeError, not only ImportError
        return False
    return True


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown renderer {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "pytorch3d" if pytorch3d_available() else "cpu"
    if backend == "pytorch3d" and not pytorch3d_available():
        raise RuntimeError("renderer 'pytorch3d' requested but `import pytorch3d.renderer` fails; "
                           "use --renderer cpu (the default pip-installable rasteriser)")
    return backend


def frame_vertices(mesh, height: int, width: int) -> np.ndarray:
    """Mesh vertices scaled from the mesh's frame to a height x width raster (z scales like x)."""
    fh, fw = mesh.frame_size
    sx, sy = width / fw, height / fh
    return np.asarray(mesh.vertices, dtype=np.float64) * np.array([sx, sy, sx])


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted per-vertex unit normals in the pixel frame, oriented toward the camera.

    The global sign comes from the nearest third of the faces (they face the camera on an
    open face mesh and on a closed head alike), so it does not depend on the winding the
    backend chose."""
    v = np.asarray(vertices, dtype=np.float64)
    tri = np.asarray(triangles, dtype=np.int64)
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    fn = np.cross(b - a, c - a)                     # length = 2 x area: area weighting for free
    centre_z = (a[:, 2] + b[:, 2] + c[:, 2]) / 3.0
    near = centre_z <= np.quantile(centre_z, 1 / 3)
    if fn[near, 2].sum() > 0:                       # toward the camera means z < 0
        fn = -fn
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, tri[:, k], fn)
    norm = np.linalg.norm(vn, axis=1, keepdims=True)
    return np.divide(vn, norm, out=np.zeros_like(vn), where=norm > 0)


def normal_map(mesh, height: int, width: int, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel interpolated unit normals (H, W, 3) in the pixel frame and the face mask (H, W)."""
    backend = resolve_backend(backend)
    verts = frame_vertices(mesh, height, width)
    tris = np.asarray(mesh.triangles, dtype=np.int64)
    vn = vertex_normals(verts, tris)
    if backend == "pytorch3d":
        # deferred: optional (pytorch3d) and heavy (torch)
        from .render_pytorch3d import interpolate_normals
        normals, mask = interpolate_normals(verts, tris, vn, height, width)
        n = normals[mask]
    else:
        face, bary, _ = rasterize(verts[:, :2], verts[:, 2], tris, height, width)
        mask = face >= 0
        n = np.einsum("pk,pkc->pc", bary[mask], vn[tris[face[mask]]])
    # Renormalise only the face pixels: interpolated unit vectors are shorter than 1.
    norm = np.sqrt(np.einsum("pc,pc->p", n, n))[:, None]
    normals = np.zeros((height, width, 3))
    normals[mask] = np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)
    return normals, mask


def shading_image(normals: np.ndarray, mask: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """Grey uint8 image: SH shading of the masked normals, background 0, face in [1, 255]."""
    out = np.zeros(mask.shape, dtype=np.uint8)
    values = shade(view_normals(normals[mask]), np.asarray(sh, dtype=np.float64))
    out[mask] = np.clip(np.rint(values * 255.0), 1, 255).astype(np.uint8)
    return out


def render(mesh, sh: np.ndarray, size: int = 512, backend: str = "auto") -> np.ndarray:
    """(size, size) uint8 condition image of `mesh` lit by the 9 luminance SH coefficients."""
    sh = np.asarray(sh, dtype=np.float64)
    if sh.shape != (9,):
        raise ValueError(f"render takes 9 luminance SH coefficients, got shape {sh.shape}")
    normals, mask = normal_map(mesh, size, size, backend=backend)
    return shading_image(normals, mask, sh)
