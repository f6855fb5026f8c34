"""dlib's face ResNet in worker processes.

dlib's Python binding holds the GIL and runs one core per `compute_face_descriptor` call
(measured: CPU time == wall time, no BLAS), so threads cannot overlap it; processes can.
Workers are spawned (not forked: the parent has torch and threads loaded), each loads the
same model file the dlib backend uses, and embeds 150 px face chips cut by the parent.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

_encoder = None


def _init() -> None:
    global _encoder
    # deferred: heavy (dlib); loaded in each spawned worker, which imports nothing else of fmu's
    import dlib
    import face_recognition_models as frm

    _encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())


def _embed(crops: list[np.ndarray]) -> np.ndarray:
    return np.asarray(_encoder.compute_face_descriptor(list(crops)), dtype=np.float32)


class DlibEmbedPool:
    def __init__(self, workers: int):
        self._pool = ProcessPoolExecutor(max_workers=workers, initializer=_init,
                                         mp_context=multiprocessing.get_context("spawn"))

    def submit(self, crops: list[np.ndarray]) -> Future:
        return self._pool.submit(_embed, crops)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
