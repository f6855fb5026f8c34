"""The face regions fmu knows by name: what a parser may produce and what caption words map to.

Left/right are the subject's own (mediapipe's convention: the subject's left eye appears on the
image's right in a frontal photo). A parser produces the regions it can and says why for the
others (`core.regions.base.RegionMasks.missing`).
"""

from __future__ import annotations

REGIONS: dict[str, str] = {
    "face": "the whole face surface (forehead to chin, eyes, brows, nose and mouth included)",
    "skin": "the face without eyes, eyebrows and mouth",
    "forehead": "face skin above the eyebrows",
    "cheeks": "both cheeks: face skin between the eyes and the mouth corners, beside the nose",
    "left_cheek": "the subject's left cheek",
    "right_cheek": "the subject's right cheek",
    "eyebrows": "both eyebrows",
    "left_eyebrow": "the subject's left eyebrow",
    "right_eyebrow": "the subject's right eyebrow",
    "eyes": "both eyes (the opening between the lids)",
    "left_eye": "the subject's left eye",
    "right_eye": "the subject's right eye",
    "irises": "the visible part of both irises",
    "nose": "the nose",
    "mouth": "lips and the opening between them",
    "lips": "upper and lower lip",
    "upper_lip": "the upper lip",
    "lower_lip": "the lower lip",
    "moustache": "the skin between the nose and the upper lip",
    "chin": "the skin below the lower lip",
    "lower_face": "the face below the nose, mouth excluded (where a beard grows)",
    "hair": "hair (and what covers it)",
    "ears": "both ears",
    "earrings": "earrings",
    "eyeglasses": "glasses or sunglasses",
    "hat": "a hat, cap or other headwear",
    "neck": "the neck",
    "necklace": "a necklace",
    "clothes": "clothing",
}


def check_regions(names) -> None:
    """ValueError for a name that is not in `REGIONS` (a typo in a vocabulary or parser table)."""
    unknown = sorted(set(names) - set(REGIONS))
    if unknown:
        raise ValueError(f"unknown region name(s) {unknown}; known: {', '.join(REGIONS)}")
