"""Detect then embed many images with the recognition network run on batches of faces.

`backend.detect` embeds every face of one image at a time. Scoring needs one face per image,
so where a backend `embeds_crops` this module has it cut the most confident face's recognition
crop per image (`best_face_crop`, in a thread pool: dlib's backend serialises itself) and embeds
the crops in batches (`embed_crops`). The numbers are the backend's own (tests compare against
`backend.detect`); a backend without crops falls back to `backend.best_face`, one image at a time.

Which face: the detector's most confident one. This is the FaceSim convention of the
insightface-based evaluations (`app.get(img)[0]`, SCRFD sorts by score), and it is robust
to dlib's HOG, whose threshold-0 false positives can be larger than the real face (a JPEG
re-encode of skimage's astronaut grows one on her suit that is bigger than her face).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..faces.base import BestFace, FaceBackend
from ..faces.dlib_backend import DlibBackend
from .dlib_pool import DlibEmbedPool

# Below this many faces, starting worker processes costs more than it saves.
POOL_MIN_IMAGES = 12


def face_embeddings(backend: FaceBackend, images: list[np.ndarray], batch_size: int = 32,
                    workers: int = 2, progress=None) -> list[BestFace]:
    """One `BestFace` per image, in order. `progress(n)` is called as images finish.

    dlib with `workers > 1` and enough images: detection in this process, embedding of the
    face chips in `workers` spawned processes, overlapping (see dlib_pool)."""
    results: list[BestFace | None] = [None] * len(images)
    if not backend.embeds_crops:
        # An unknown backend may share non-thread-safe state (dlib does): one image at a time.
        for i, image in enumerate(images):
            results[i] = backend.best_face(image)
            if progress:
                progress(1)
        return results  # type: ignore[return-value]

    pool = None
    if isinstance(backend, DlibBackend) and workers > 1 and len(images) >= POOL_MIN_IMAGES:
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
                store(batch, backend.embed_crops([crop for _, _, crop in batch]))

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as threads:
            for i, (n, crop) in enumerate(threads.map(backend.best_face_crop, images)):
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
