"""On-disk cache of face analyses keyed by image content and backend identity.

Rows that share a reference (and workers that share an output folder) analyse it once.
A "no face" outcome is cached too, so a bad reference is not re-analysed per row.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from ..digests import bytes_digest, file_digest
from ..errors import MultiFaceError, NoFaceError
from ..images import atomic_write_bytes, check_file_size, decode_rgb, load_rgb
from .base import FaceAnalysis, FaceBackend


def content_hash(data: bytes) -> str:
    return bytes_digest(data)


def backend_key(backend: FaceBackend) -> str:
    return hashlib.sha256(json.dumps(backend.identity(), sort_keys=True).encode()).hexdigest()[:12]


class FaceCache:
    def __init__(self, root: Path, backend: FaceBackend, crop: str = "aligned", pick: str = "best"):
        if pick not in ("best", "largest"):
            raise ValueError(f"pick must be 'best' or 'largest', not {pick!r}")
        self.backend, self.crop, self.pick = backend, crop, pick
        # which face and which crop style are part of what is cached: each pair has its own folder
        suffix = ("" if crop == "aligned" else f"-{crop}") + f"-{pick}"
        self.root = Path(root) / "faces" / f"{backend.name}-{backend_key(backend)}{suffix}"
        self.analyses = 0  # how many analyses actually ran (not served from cache)

    def path(self, digest: str) -> Path:
        """Where the analysis of the image whose content hash is `digest` is cached (`read_entry`
        reads it; `fmu prepare` records it for training)."""
        return self.root / digest[:2] / f"{digest}.npz"

    def _cached(self, digest: str):
        """The stored outcome for this content (an analysis or "no_face"), or None."""
        path = self.path(digest)
        if not path.exists():
            return None
        try:
            return read_entry(path)
        except (OSError, ValueError, KeyError):
            return None  # a damaged cache entry is recomputed, never trusted

    def _analyse(self, digest: str, data: bytes, source: str):
        self.analyses += 1
        path = self.path(digest)
        try:
            result = self.backend.analyse(decode_rgb(data, source), multi_face=self.pick, crop=self.crop)
        except NoFaceError:
            atomic_write_bytes(path, _dump_no_face())
            return "no_face"
        atomic_write_bytes(path, _dump(result))
        return result

    def _outcome(self, result, multi_face: str) -> FaceAnalysis:
        if multi_face not in ("error", self.pick):
            raise ValueError(f"this cache holds the {self.pick!r} face of each image; "
                             f"multi_face={multi_face!r} needs FaceCache(pick={multi_face!r})")
        if result == "no_face":
            raise NoFaceError("no face detected")
        if multi_face == "error" and result.num_faces > 1:
            raise MultiFaceError(f"{result.num_faces} faces detected and --multi-face is 'error'")
        return result

    def analyse_bytes(self, data: bytes, source: str, multi_face: str = "best") -> FaceAnalysis:
        digest = content_hash(data)
        result = self._cached(digest)
        if result is None:
            result = self._analyse(digest, data, source)
        return self._outcome(result, multi_face)

    def analyse_file(self, path: Path, multi_face: str = "best") -> FaceAnalysis:
        """Like analyse_bytes, but a file already analysed is not even read again."""
        path = Path(path)
        if not path.is_file():
            load_rgb(path)  # raises the ImageError a missing or odd path deserves
        check_file_size(path)  # before hashing or reading it: a padded 3 GB file costs nothing
        try:
            result = self._cached(file_digest(path))
        except OSError:
            result = None  # unreadable now: the read below reports it
        if result is None:
            return self.analyse_bytes(path.read_bytes(), str(path), multi_face)
        return self._outcome(result, multi_face)


def _dump(a: FaceAnalysis) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, embedding=a.embedding, crop=a.crop, bbox=a.bbox, landmarks=a.landmarks,
             num_faces=np.int64(a.num_faces), backend=np.array(a.backend))
    return buf.getvalue()


def _dump_no_face() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, no_face=np.int64(1))
    return buf.getvalue()


def read_entry(path: Path) -> FaceAnalysis | str:
    """A cache file: the FaceAnalysis stored in it, or "no_face"."""
    with np.load(path, allow_pickle=False) as z:
        if "no_face" in z.files:
            return "no_face"
        return FaceAnalysis(embedding=z["embedding"], crop=z["crop"], bbox=z["bbox"],
                            landmarks=z["landmarks"], num_faces=int(z["num_faces"]),
                            backend=str(z["backend"]))
