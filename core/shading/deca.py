"""DECA/FLAME reconstructor plug-in (registered as "deca"), for users who hold the licensed files.

The paper's authors reconstructed faces with DECA on the FLAME head model. FLAME and the
DECA weights are licence-gated, so fmu never ships or downloads them; this adapter runs
DECA when you provide it and otherwise refuses with the list of what is missing:

- the DECA source package `decalib` importable (github.com/yfeng95/DECA on PYTHONPATH; it
  needs pytorch3d and torchvision itself);
- a data folder, given by $FMU_DECA_DATA or `DecaReconstructor(data_dir=...)`, holding
  REQUIRED_FILES (FLAME `generic_model.pkl` and `deca_model.tar` from the licence pages; the
  rest ship in DECA's `data/` folder).

What it does: finds the face with the mediapipe mesh (only to place DECA's crop, as DECA's
own demo does with a detector), crops 224x224 like DECA's TestData (box size x1.25),
encodes, decodes the coarse FLAME mesh without DECA's renderer, and maps the projected
vertices back to the input frame with FaceMesh conventions. Pose is FLAME's global
rotation converted to the camera frame; expression = 50 FLAME expression coefficients +
3 jaw-pose values. NOT exercised here (no licensed files on this machine): treat the
first real run as its test.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .mesh import FaceMesh, ReconstructorUnavailable
from .pose import euler_from_rotation

REQUIRED_FILES = (
    "generic_model.pkl",           # FLAME 2020 model (flame.is.tue.mpg.de, licence required)
    "deca_model.tar",              # DECA pretrained weights (licence required)
    "head_template.obj",
    "landmark_embedding.npy",
    "texture_data_256.npy",
    "fixed_displacement_256.npy",
    "uv_face_mask.png",
    "uv_face_eye_mask.png",
    "mean_texture.jpg",
)
CROP_SIZE = 224
CROP_SCALE = 1.25
# FLAME/DECA frame (x right, y up, z toward viewer) <-> ours (x right, y down, z away).
_FLIP = np.diag([1.0, -1.0, -1.0])


def missing_requirements(data_dir: str | os.PathLike | None) -> list[str]:
    problems = []
    if importlib.util.find_spec("decalib") is None:
        problems.append("the DECA source package `decalib` (github.com/yfeng95/DECA) is not importable")
    if not data_dir:
        problems.append("no DECA data folder: set FMU_DECA_DATA to a folder holding " + ", ".join(REQUIRED_FILES))
    else:
        absent = [f for f in REQUIRED_FILES if not (Path(data_dir) / f).is_file()]
        if absent:
            problems.append(f"missing in {data_dir}: " + ", ".join(absent))
    return problems


class DecaReconstructor:
    """`landmarks(image) -> (478, 3)` points of the face (the registry passes the shared mediapipe
    mesh's; NoFaceError when none): they place DECA's crop."""

    name = "deca"

    def __init__(self, landmarks: Callable[[np.ndarray], np.ndarray],
                 data_dir: str | os.PathLike | None = None, device: str = "cpu"):
        data_dir = data_dir or os.environ.get("FMU_DECA_DATA")
        problems = missing_requirements(data_dir)
        if problems:
            raise ReconstructorUnavailable("DECA reconstructor unavailable: " + "; ".join(problems))
        # deferred: optional (decalib, licensed files), imported only once they are known present
        from decalib.deca import DECA
        from decalib.utils.config import cfg as deca_cfg

        cfg = deca_cfg.clone()
        d = Path(data_dir)
        cfg.device = device
        cfg.pretrained_modelpath = str(d / "deca_model.tar")
        cfg.model.flame_model_path = str(d / "generic_model.pkl")
        cfg.model.topology_path = str(d / "head_template.obj")
        cfg.model.flame_lmk_embedding_path = str(d / "landmark_embedding.npy")
        cfg.model.dense_template_path = str(d / "texture_data_256.npy")
        cfg.model.fixed_displacement_path = str(d / "fixed_displacement_256.npy")
        cfg.model.face_mask_path = str(d / "uv_face_mask.png")
        cfg.model.face_eye_mask_path = str(d / "uv_face_eye_mask.png")
        cfg.model.mean_tex_path = str(d / "mean_texture.jpg")
        cfg.model.use_tex = False  # the BFM albedo file is optional and unused for shape
        self._landmarks = landmarks
        self._device = device
        self._deca = DECA(config=cfg, device=device)
        self._faces = self._deca.flame.faces_tensor.cpu().numpy().astype(np.int32)

    def __call__(self, image_rgb: np.ndarray) -> FaceMesh:
        # deferred: heavy (torch, scipy, scikit-image), needed only when DECA runs
        import torch
        from scipy.spatial.transform import Rotation
        from skimage.transform import SimilarityTransform, warp

        points = self._landmarks(image_rgb)  # NoFaceError when none
        lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
        centre = (lo + hi) / 2.0
        side = (hi - lo).sum() / 2.0 * 1.1 * CROP_SCALE
        src = np.array([centre - side / 2, centre + [-side / 2, side / 2], centre + [side / 2, -side / 2]])
        dst = np.array([[0, 0], [0, CROP_SIZE - 1], [CROP_SIZE - 1, 0]], dtype=np.float64)
        tform = SimilarityTransform()
        tform.estimate(src, dst)
        crop = warp(np.asarray(image_rgb) / 255.0, tform.inverse, output_shape=(CROP_SIZE, CROP_SIZE))
        batch = torch.tensor(crop.transpose(2, 0, 1)[None], dtype=torch.float32, device=self._device)
        with torch.no_grad():
            code = self._deca.encode(batch, use_detail=False)
            out = self._deca.decode(code, rendering=False, vis_lmk=False, return_vis=False, use_detail=False)
        tv = out["trans_verts"][0].cpu().numpy().astype(np.float64)  # crop NDC, y down, z away
        crop_px = (tv[:, :2] + 1.0) * CROP_SIZE / 2.0
        xy = tform.inverse(crop_px)
        z = tv[:, 2] * CROP_SIZE / 2.0 / tform.scale
        pose = code["pose"][0].cpu().numpy().astype(np.float64)
        rotation = _FLIP @ Rotation.from_rotvec(pose[:3]).as_matrix() @ _FLIP
        expression = np.concatenate([code["exp"][0].cpu().numpy(), pose[3:]]).astype(np.float32)
        return FaceMesh(
            vertices=np.column_stack([xy, z]).astype(np.float32),
            triangles=self._faces,
            rotation=rotation.astype(np.float32),
            pose=euler_from_rotation(rotation).astype(np.float32),
            expression=expression,
            frame_size=(int(image_rgb.shape[0]), int(image_rgb.shape[1])),
            backend=self.name,
        )
