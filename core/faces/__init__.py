"""Face analysis: detect, choose, align, embed. Backends share `base.FaceBackend`."""

from __future__ import annotations

from pathlib import Path

from .base import MULTI_FACE_POLICIES, Face, FaceAnalysis, FaceBackend

BACKENDS = ("dlib", "insightface")


def get_backend(name: str, device: str = "cpu", models_dir: Path | None = None,
                det_size: int = 640) -> FaceBackend:
    """Build a face backend by name. Imports lazily: each backend pulls heavy libraries."""
    if name == "dlib":
        from .dlib_backend import DlibBackend

        return DlibBackend()
    if name == "insightface":
        from .insightface_backend import InsightFaceBackend

        return InsightFaceBackend(models_dir=models_dir, device=device, det_size=det_size)
    from ..errors import UsageError

    raise UsageError(f"unknown face backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "MULTI_FACE_POLICIES", "Face", "FaceAnalysis", "FaceBackend", "get_backend"]
