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
from .crops import CROP_STYLES, wide_crop

MULTI_FACE_POLICIES = ("best", "largest", "error")


def pick_face(faces: list[Face], policy: str = "best") -> Face:
    if policy == "largest":
        return max(faces, key=lambda f: f.area)
    return max(faces, key=lambda f: f.score)


@dataclass
class BestFace:
    """The face identity scores are taken on: the detector's most confident face of an image
    (FaceSim's convention, see the module docstring)."""

    embedding: np.ndarray | None    # None when no face was found
    num_faces: int

    @property
    def found(self) -> bool:
        return self.embedding is not None


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

    # A backend that can cut its recognition network's input crop for one face and embed many such
    # crops at once sets this and implements `best_face_crop` and `embed_crops`; scoring then embeds
    # in batches (core.scoring.face_batch). The embeddings equal the ones `detect` gives.
    embeds_crops = False

    def best_face_crop(self, image: np.ndarray) -> tuple[int, np.ndarray | None]:
        """(number of faces, the recognition input crop of the most confident one); (0, None)
        when there is no face. Only where `embeds_crops`."""
        raise NotImplementedError

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """(N, D) float32 embeddings of crops cut by `best_face_crop`. Only where `embeds_crops`."""
        raise NotImplementedError

    def best_face(self, image: np.ndarray) -> BestFace:
        """The embedding of the detector's most confident face, and how many faces there are."""
        if self.embeds_crops:
            n, crop = self.best_face_crop(image)
            return BestFace(None, 0) if crop is None else BestFace(self.embed_crops([crop])[0], n)
        faces = self.detect(image)
        if not faces:
            return BestFace(None, 0)
        return BestFace(np.asarray(pick_face(faces, "best").embedding, dtype=np.float32), len(faces))

    def id_similarity(self, ref_embedding: np.ndarray, image: np.ndarray) -> tuple[float | None, str | None]:
        """Identity similarity of `image`'s most confident face to a reference embedding, on this
        backend's scale (`similarity`); `(None, reason)` when the image has no detectable face.
        `fmu generate` writes it per image; `fmu score` takes the same faces through
        `best_face_crop`/`embed_crops` in batches and compares them with `similarity`."""
        found = self.best_face(image)
        if not found.found:
            return None, "no_face: no face detected in the output"
        return float(self.similarity(ref_embedding, found.embedding)), None

    def identity(self) -> dict:
        """Which model files this backend runs: recorded in run.json and cache keys."""
        return {"backend": self.name}

    def analyse(self, image: np.ndarray, multi_face: str = "best", crop: str = "aligned") -> FaceAnalysis:
        """The face `multi_face` picks: embedding, box, landmarks and the CLIP face image in style
        `crop` (see `core.faces.crops`)."""
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
