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


__all__ = ["BACKENDS", "MULTI_FACE_POLICIES", "BestFace", "DlibBackend", "Face", "FaceAnalysis", "FaceBackend",
           "InsightFaceBackend", "get_backend"]
