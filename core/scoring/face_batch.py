"""Detect then embed many images with the recognition network run on batches of faces.

`backend.detect` embeds every face of one image at a time. Scoring needs one face per
image, so this module detects per image (in a
thread pool where the backend is thread-safe), cuts the aligned crop
the recognition network takes, and embeds the crops in batches. Each adapter reproduces its
backend's own embedding exactly (tests compare against `backend.detect`); a backend without
an adapter falls back to `backend.detect`, same numbers, no batching.

Which face: the detector's most confident one. This is the FaceSim convention of the
insightface-based evaluations (`app.get(img)[0]`, SCRFD sorts by score), and it is robust
to dlib's HOG, whose threshold-0 false positives can be larger than the real face (a JPEG
re-encode of skimage's astronaut grows one on her suit that is bigger than her face).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..faces.base import FaceBackend, pick_face


@dataclass
class BestFace:
    embedding: np.ndarray | None    # None when no face was found
    num_faces: int

    @property
    def found(self) -> bool:
        return self.embedding is not None


class _DlibBatch:
    """dlib: HOG boxes from the backend, 5-point shape, 150 px chip (padding 0.25: exactly what
    `compute_face_descriptor(image, shape)` cuts internally), batched ResNet.

    The backend's dlib objects are shared and NOT thread-safe (two threads in one HOG detector
    return garbage boxes), so detection is serialised; only decoding runs in parallel."""

    def __init__(self, backend):
        from ..faces import dlib_backend

        self.backend = backend
        self._lock = dlib_backend.DLIB_LOCK  # one lock for every dlib call in the process
        _, self.predictor, self.encoder = dlib_backend._models()

    def locate(self, image: np.ndarray):
        with self._lock:
            return self._locate(image)

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        with self._lock:
            return np.asarray(self.encoder.compute_face_descriptor(crops), dtype=np.float32)

    def _locate(self, image: np.ndarray):
        import dlib

        image = np.ascontiguousarray(image)
        boxes = self.backend._detect_boxes(image)
        if not boxes:
            return 0, None
        rect = max(boxes, key=lambda b: b[1])[0]
        shape = self.predictor(image, rect)
        return len(boxes), dlib.get_face_chip(image, shape, size=150, padding=0.25)


class _InsightFaceBatch:
    """insightface: the pack's detector, `norm_crop` to 112 px, `ArcFaceONNX.get_feat` on a batch,
    L2-normalised as insightface's `normed_embedding`."""

    def __init__(self, backend, det_model, rec_model):
        self.backend, self.det, self.rec = backend, det_model, rec_model

    def locate(self, image: np.ndarray):
        from insightface.utils import face_align

        bgr = np.ascontiguousarray(image[:, :, ::-1])
        bboxes, kpss = self.det.detect(bgr, max_num=0, metric="default")
        if bboxes is None or len(bboxes) == 0:
            return 0, None
        i = int(np.argmax(bboxes[:, 4]))
        with _quiet_face_align():
            return len(bboxes), face_align.norm_crop(bgr, landmark=kpss[i], image_size=self.rec.input_size[0])

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        feats = np.asarray(self.rec.get_feat(crops), dtype=np.float32).reshape(len(crops), -1)
        return feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(min=1e-12)


def _quiet_face_align():
    try:
        from ..faces.insightface_backend import _quiet_face_align as quiet

        return quiet()
    except ImportError:
        import contextlib

        return contextlib.nullcontext()


def batch_adapter(backend: FaceBackend):
    """The batching adapter for this backend, or None to fall back to `backend.detect`."""
    if backend.name == "dlib" and hasattr(backend, "_detect_boxes"):
        return _DlibBatch(backend)
    if backend.name == "insightface":
        det = getattr(backend, "det_model", None) or getattr(backend, "detector", None)
        rec = getattr(backend, "rec_model", None) or getattr(backend, "recognizer", None)
        if det is not None and rec is not None and hasattr(rec, "get_feat"):
            return _InsightFaceBatch(backend, det, rec)
    return None


def _best_by_detect(backend: FaceBackend, image: np.ndarray) -> BestFace:
    faces = backend.detect(image)
    if not faces:
        return BestFace(None, 0)
    face = pick_face(faces, "best")  # the face generate uses by default
    return BestFace(np.asarray(face.embedding, dtype=np.float32), len(faces))


# Below this many faces, starting worker processes costs more than it saves.
POOL_MIN_IMAGES = 12


def face_embeddings(backend: FaceBackend, images: list[np.ndarray], batch_size: int = 32,
                    workers: int = 2, progress=None) -> list[BestFace]:
    """One `BestFace` per image, in order. `progress(n)` is called as images finish.

    dlib with `workers > 1` and enough images: detection in this process, embedding of the
    face chips in `workers` spawned processes, overlapping (see dlib_pool)."""
    adapter = batch_adapter(backend)
    results: list[BestFace | None] = [None] * len(images)
    if adapter is None:
        # An unknown backend may share non-thread-safe state (dlib does): one image at a time.
        for i, image in enumerate(images):
            results[i] = _best_by_detect(backend, image)
            if progress:
                progress(1)
        return results  # type: ignore[return-value]

    pool = None
    if isinstance(adapter, _DlibBatch) and workers > 1 and len(images) >= POOL_MIN_IMAGES:
        from .dlib_pool import DlibEmbedPool

        pool = DlibEmbedPool(workers)
        # small chunks keep every worker busy while detection goes on here
        batch_size = max(2, min(batch_size, len(images) // (2 * workers)))
    pending: list[tuple[int, int, np.ndarray]] = []
    futures = []

    def store(batch, embs):
        for (i, n, _), emb in zip(batch, embs):
            results[i] = BestFace(emb, n)
        if progress:
            progress(len(batch))

    def flush():
        if pending:
            batch = list(pending)
            pending.clear()
            if pool is not None:
                futures.append((batch, pool.submit([crop for _, _, crop in batch])))
            else:
                store(batch, adapter.embed([crop for _, _, crop in batch]))

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as threads:
            for i, (n, crop) in enumerate(threads.map(adapter.locate, images)):
                if crop is None:
                    results[i] = BestFace(None, 0)
                    if progress:
                        progress(1)
                    continue
                pending.append((i, n, crop))
                if len(pending) >= batch_size:
                    flush()
            flush()
        for batch, future in futures:
            store(batch, future.result())
    finally:
        if pool is not None:
            pool.close()
    return results  # type: ignore[return-value]
