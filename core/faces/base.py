"""The face-analysis interface every backend implements.

A backend finds faces in an RGB image and embeds each one; `analyse` picks the face a row
uses (`--multi-face best|largest|error`) and cuts the crop the image encoder sees.

"best" (default) is the detector's most confident face: the authors' `faces[0]` (insightface
sorts by score) and the face `fmu score` measures. It also survives dlib's HOG false positives,
which can be larger than the real face (a patch on the astronaut's suit, in one crop of her
photo). "largest" takes the biggest box; "error" refuses images with more than one face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MultiFaceError, NoFaceError

MULTI_FACE_POLICIES = ("best", "largest", "error")


def pick_face(faces: list[Face], policy: str = "best") -> Face:
    if policy == "largest":
        return max(faces, key=lambda f: f.area)
    return max(faces, key=lambda f: f.score)


@dataclass
class Face:
    bbox: np.ndarray            # (4,) x1, y1, x2, y2 in image pixels
    landmarks: np.ndarray       # (5, 2): eyes, nose, mouth corners (backend order documented there)
    embedding: np.ndarray       # (D,) float32 identity embedding
    score: float = 1.0          # detector confidence

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.bbox
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))


@dataclass
class FaceAnalysis:
    """What the rest of fmu needs from one reference image."""

    embedding: np.ndarray       # (D,) float32
    crop: np.ndarray            # (S, S, 3) uint8 aligned face crop for the CLIP image encoder
    bbox: np.ndarray
    landmarks: np.ndarray
    num_faces: int
    backend: str


class FaceBackend:
    """Subclasses set `name`, `embedding_dim` and implement `detect`, `align` and `similarity`."""

    name = "base"
    embedding_dim = 0
    crop_size = 224

    def detect(self, image: np.ndarray) -> list[Face]:
        raise NotImplementedError

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        raise NotImplementedError

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        """Higher is more alike; the scale is the backend's own (documented per backend)."""
        raise NotImplementedError

    def is_match(self, a: np.ndarray, b: np.ndarray) -> bool:
        raise NotImplementedError

    def identity(self) -> dict:
        """Which model files this backend runs: recorded in run.json and cache keys."""
        return {"backend": self.name}

    def analyse(self, image: np.ndarray, multi_face: str = "best", crop: str = "aligned") -> FaceAnalysis:
        """The face `multi_face` picks: embedding, box, landmarks and the CLIP face image in style
        `crop` (see `core.faces.crops`)."""
        from .crops import CROP_STYLES, wide_crop

        if multi_face not in MULTI_FACE_POLICIES:
            raise ValueError(f"multi_face must be one of {MULTI_FACE_POLICIES}")
        if crop not in CROP_STYLES:
            raise ValueError(f"crop must be one of {CROP_STYLES}")
        faces = self.detect(image)
        if not faces:
            raise NoFaceError("no face detected")
        if len(faces) > 1 and multi_face == "error":
            raise MultiFaceError(f"{len(faces)} faces detected and --multi-face is 'error'")
        face = pick_face(faces, multi_face)
        return FaceAnalysis(
            embedding=np.asarray(face.embedding, dtype=np.float32),
            crop=self.align(image, face) if crop == "aligned" else wide_crop(image, face.landmarks),
            bbox=np.asarray(face.bbox, dtype=np.float32),
            landmarks=np.asarray(face.landmarks, dtype=np.float32),
            num_faces=len(faces),
            backend=self.name,
        )
