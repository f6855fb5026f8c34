"""pytorch3d rasteriser backend (imported by `render.normal_map` only when `import pytorch3d`
works; it has no Linux wheels on PyPI, so it is never a dependency).

Written against pytorch3d's documented API: `OrthographicCameras` with the identity
extrinsics and `in_ndc=True` (so NDC = view coordinates), `MeshRasterizer`, and
`pytorch3d.ops.interpolate_face_attributes`. Our pixel frame maps to pytorch3d NDC
(+x left, +y up, +z into the screen, the shorter image side spanning [-1, 1]) by

    x_ndc = (W - 2 x) / s,   y_ndc = (H - 2 y) / s,   s = min(H, W)

which puts pixel centre (j + 0.5, i + 0.5) where pytorch3d samples pixel (i, j). Depth is
shifted to be positive (pytorch3d skips faces behind the camera); no perspective
correction (orthographic), no backface culling, one face per pixel, hard edges.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch3d.ops import interpolate_face_attributes
from pytorch3d.renderer import MeshRasterizer, OrthographicCameras, RasterizationSettings
from pytorch3d.structures import Meshes


def interpolate_normals(vertices: np.ndarray, triangles: np.ndarray, vertex_normals: np.ndarray,
                        height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Same contract as the cpu path of `render.normal_map`: ((H, W, 3) normals, (H, W) mask)."""
    v = np.asarray(vertices, dtype=np.float64)
    s = float(min(height, width))
    ndc = np.stack([(width - 2.0 * v[:, 0]) / s,
                    (height - 2.0 * v[:, 1]) / s,
                    v[:, 2] - v[:, 2].min() + 1.0], axis=1)
    verts = torch.tensor(ndc, dtype=torch.float32)
    faces = torch.tensor(np.asarray(triangles, dtype=np.int64))
    meshes = Meshes(verts=[verts], faces=[faces])
    # bin_size=0: naive rasterisation, exact and fast enough for ~900 faces (no bin overflow).
    settings = RasterizationSettings(image_size=(height, width), blur_radius=0.0, faces_per_pixel=1, bin_size=0,
                                     perspective_correct=False, cull_backfaces=False)
    rasterizer = MeshRasterizer(cameras=OrthographicCameras(in_ndc=True), raster_settings=settings)
    fragments = rasterizer(meshes)
    face_normals = torch.tensor(np.asarray(vertex_normals)[np.asarray(triangles)], dtype=torch.float32)
    normals = interpolate_face_attributes(fragments.pix_to_face, fragments.bary_coords, face_normals)
    mask = fragments.pix_to_face[0, ..., 0] >= 0
    return normals[0, ..., 0, :].double().numpy(), mask.numpy()
