"""insightface backend: an SCRFD detector and an ArcFace recognizer from a model pack (buffalo_l).

This is the face analysis the method is defined with: IP-Adapter-FaceID-PlusV2 takes the
512-d ArcFace `normed_embedding` of buffalo_l, and the paper's FaceSim is the cosine of
those embeddings (detector size 640). Only the pack's detection and recognition files are
loaded; its landmark and gender/age models are not needed and stay on disk.

Both models go through `insightface.model_zoo.get_model`, which decides a file's type from
its graph (>= 5 outputs: SCRFD; square input >= 112: ArcFaceONNX), so any pack laid out
like buffalo_l works. insightface works on BGR arrays; fmu hands this backend RGB arrays and
converts once per image. Offline, tests use the `core.model.tiny_onnx.write_tiny_pack` stand-ins.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..digests import file_digest
from ..errors import UsageError
from .base import Face, FaceBackend
from .providers import onnx_providers

# Cosine threshold for "same person": insightface's own default (insightface 2.1,
# gui/core/constants.py DEFAULT_THRESHOLD = 0.4, used by its face-compare view). It is a
# rule of thumb for buffalo-pack ArcFace embeddings, not a calibrated operating point.
MATCH_COSINE = 0.4

# The two files fmu needs from each known pack, for the "where do I put the models" message.
PACK_FILES = {
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx"),
    "buffalo_m": ("det_2.5g.onnx", "w600k_r50.onnx"),
    "buffalo_s": ("det_500m.onnx", "w600k_mbf.onnx"),
    "buffalo_sc": ("det_500m.onnx", "w600k_mbf.onnx"),
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
}
# Try likely detector/recognizer files first so that, once both are found, the big landmark
# model (1k3d68.onnx, 137 MB in buffalo_l) never gets an inference session.
_LIKELY = ("det", "scrfd", "w600k", "glint", "r50", "r100", "mbf")


@contextmanager
def _quiet_face_align():
    """insightface's face_align calls skimage's deprecated `SimilarityTransform.estimate`,
    which warns once per face on scikit-image >= 0.26; the result is unchanged."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*`estimate` is deprecated", category=FutureWarning)
        yield


def insightface_home() -> Path:
    return Path(os.environ.get("INSIGHTFACE_HOME", "~/.insightface")).expanduser()


def _has_onnx(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*.onnx"))


def _where_to_put(pack: str, target: Path) -> str:
    det, rec = PACK_FILES.get(pack, ("an SCRFD detector .onnx", "an ArcFace recognition .onnx"))
    return (f"put {pack}'s {det} and {rec} in {target}/ "
            "(or pass that folder with --face-models, or set INSIGHTFACE_HOME)")


def find_pack(models_dir: Path | None, pack: str = "buffalo_l") -> Path:
    """The folder holding the pack's .onnx files; UsageError naming every place looked in."""
    candidates = []
    if models_dir is not None:
        models_dir = Path(models_dir).expanduser()
        candidates += [models_dir, models_dir / pack]
    candidates += [insightface_home() / "models" / pack]
    if "INSIGHTFACE_HOME" in os.environ:
        candidates += [Path("~/.insightface/models").expanduser() / pack]
    for folder in candidates:
        if _has_onnx(folder):
            return folder
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    target = (models_dir / pack) if models_dir is not None else insightface_home() / "models" / pack
    raise UsageError(f"insightface pack {pack!r} not found (looked in {looked}): "
                     + _where_to_put(pack, target))


def load_pack_models(folder: Path, providers: list, pack: str = "buffalo_l"):
    """(detector, recognizer) from a pack folder, typed by insightface's model router."""
    # deferred: heavy (insightface), only an ArcFace run
    from insightface.model_zoo import get_model

    files = sorted(folder.glob("*.onnx"),
                   key=lambda p: (not any(k in p.name.lower() for k in _LIKELY), p.name))
    found: dict[str, object] = {}
    problems = []
    for path in files:
        try:
            model = get_model(str(path), providers=providers)
        except Exception as exc:  # noqa: BLE001  a truncated download or an LFS pointer: say which file
            problems.append(f"{path.name}: {type(exc).__name__}: {exc}")
            continue
        task = getattr(model, "taskname", None)
        if task in ("detection", "recognition") and task not in found:
            found[task] = model
        if len(found) == 2:
            break
    missing = [t for t in ("detection", "recognition") if t not in found]
    if missing:
        detail = f" (unreadable: {'; '.join(problems)})" if problems else ""
        raise UsageError(f"insightface pack at {folder} has no {' or '.join(missing)} model"
                         f"{detail}: " + _where_to_put(pack, folder))
    if not getattr(found["detection"], "use_kps", False):
        raise UsageError(f"{found['detection'].model_file} detects boxes without the 5 landmarks "
                         "fmu aligns faces with; use a *_kps SCRFD detector (e.g. buffalo_l's det_10g.onnx)")
    return found["detection"], found["recognition"]


class InsightFaceBackend(FaceBackend):
    """SCRFD + ArcFace. Landmarks are insightface's 5 points: left eye, right eye, nose,
    left mouth corner, right mouth corner (left/right as seen in the image).
    `similarity` is the cosine of the embeddings; `is_match` is cosine >= MATCH_COSINE."""

    name = "insightface"
    embeds_crops = True

    def __init__(self, models_dir: Path | None = None, pack: str = "buffalo_l",
                 device: str = "cpu", det_size: int = 640, det_thresh: float = 0.5):
        self.pack = pack
        self.device = device
        self.det_size = int(det_size)
        self.det_thresh = float(det_thresh)
        self.providers = onnx_providers(device)   # first: a CUDA problem is not a pack problem
        self.pack_dir = find_pack(Path(models_dir) if models_dir is not None else None, pack)
        self.detector, self.recognizer = load_pack_models(self.pack_dir, self.providers, pack)
        # ctx_id >= 0 keeps the providers given above (a negative id would force CPU).
        self.detector.prepare(0, input_size=(self.det_size, self.det_size), det_thresh=self.det_thresh)
        self.embedding_dim = int(self.recognizer.output_shape[-1])
        self._identity: dict | None = None

    def detect(self, image: np.ndarray) -> list[Face]:
        from insightface.utils import face_align  # deferred: heavy (insightface)

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
        bgr = np.ascontiguousarray(image[..., ::-1])
        boxes, kpss = self.detector.detect(bgr, max_num=0)
        if len(boxes) == 0:
            return []
        # norm_crop to the recognizer's input (112) and one batched run: what
        # ArcFaceONNX.get does per face.
        size = self.recognizer.input_size[0]
        with _quiet_face_align():
            crops = [face_align.norm_crop(bgr, landmark=kps, image_size=size) for kps in kpss]
        feats = np.asarray(self.recognizer.get_feat(crops), dtype=np.float32)
        normed = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        return [Face(bbox=box[:4].astype(np.float32), landmarks=kps.astype(np.float32),
                     embedding=emb, score=float(box[4]))
                for box, kps, emb in zip(boxes, kpss, normed)]

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The 224x224 ArcFace-template crop FaceID-PlusV2 gives the CLIP image encoder (RGB)."""
        from insightface.utils import face_align  # deferred: heavy (insightface)

        # A similarity warp moves pixels, not channels: RGB in, RGB out.
        with _quiet_face_align():
            return face_align.norm_crop(np.ascontiguousarray(image),
                                        landmark=np.asarray(face.landmarks, dtype=np.float32),
                                        image_size=self.crop_size)

    def best_face_crop(self, image: np.ndarray) -> tuple[int, np.ndarray | None]:
        """The pack's detector, then `norm_crop` of the most confident face to the recognizer's
        input (112 px): what `detect` embeds for that face."""
        from insightface.utils import face_align  # deferred: heavy (insightface)

        bgr = np.ascontiguousarray(image[:, :, ::-1])
        bboxes, kpss = self.detector.detect(bgr, max_num=0, metric="default")
        if bboxes is None or len(bboxes) == 0:
            return 0, None
        i = int(np.argmax(bboxes[:, 4]))
        with _quiet_face_align():
            return len(bboxes), face_align.norm_crop(bgr, landmark=kpss[i],
                                                     image_size=self.recognizer.input_size[0])

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """`ArcFaceONNX.get_feat` on a batch of crops, L2-normalised as insightface's `normed_embedding`."""
        feats = np.asarray(self.recognizer.get_feat(crops), dtype=np.float32).reshape(len(crops), -1)
        return feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(min=1e-12)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        a = np.asarray(a, np.float64).ravel()
        b = np.asarray(b, np.float64).ravel()
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    def is_match(self, a: np.ndarray, b: np.ndarray) -> bool:
        return self.similarity(a, b) >= MATCH_COSINE

    def identity(self) -> dict:
        if self._identity is None:
            self._identity = {
                "backend": self.name,
                "pack": str(self.pack_dir),
                "detector": {Path(self.detector.model_file).name:
                             file_digest(self.detector.model_file)[:16]},
                "recognition": {Path(self.recognizer.model_file).name:
                                file_digest(self.recognizer.model_file)[:16]},
                "det_size": self.det_size,
                "det_thresh": self.det_thresh,
            }
        return self._identity
