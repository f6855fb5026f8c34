"""Face analysis: detect, choose, align, embed, and compare identities (dlib | insightface), with
a content-hash cache of analyses. Backends share `base.FaceBackend`."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from .base import MULTI_FACE_POLICIES, BestFace, Face, FaceAnalysis, FaceBackend
from .dlib_backend import DlibBackend
from .insightface_backend import InsightFaceBackend

BACKENDS = ("dlib", "insightface")


def get_backend(name: str, device: str = "cpu", models_dir: Path | None = None,
                det_size: int = 640) -> FaceBackend:
    """Build a face backend by name (each backend imports its heavy libraries when built)."""
    if name == "dlib":
        return DlibBackend()
    if name == "insightface":
        return InsightFaceBackend(models_dir=models_dir, device=device, det_size=det_size)
    raise UsageError(f"unknown face backend {name!r}; choose one of {', '.join(BACKENDS)}")


def embedding_width(name: str, models_dir: Path | None = None) -> int:
    """The width of the embeddings backend `name` makes, checking that it can run here (its library
    imports, its model files load): a one-line UsageError when not."""
    try:
        if name == "dlib":
            # deferred: the imports are the probe (heavy, and only a dlib run needs them)
            import dlib  # noqa: F401
            import face_recognition_models  # noqa: F401
            return DlibBackend.embedding_dim
        return get_backend(name, device="cpu", models_dir=models_dir).embedding_dim
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001  a broken install fails in many ways: one line, exit 2
        raise UsageError(f"--face-backend {name} cannot run here: {type(exc).__name__}: {exc}".splitlines()[0]) \
            from None


__all__ = ["BACKENDS", "MULTI_FACE_POLICIES", "BestFace", "DlibBackend", "Face", "FaceAnalysis", "FaceBackend",
           "InsightFaceBackend", "embedding_width", "get_backend"]
