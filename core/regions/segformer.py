"""`segformer:<folder or hub id>`: a transformers SegFormer face parser (CelebAMask-HQ label family).

The parser runs on the face frame (`base.FaceFrame`, close to the CelebA-HQ crops these models
are trained on) and its per-pixel argmax is pasted back into the photo. Published copies of one
checkpoint list their 19 classes in *different orders*, so a class is found by its name in the
model's own `config.id2label` (`LABEL_NAMES`: the spellings in use), never by its index. Labels
with unknown names are ignored; a model with none of these names is refused.

CelebAMask-HQ (and the parsers trained on it) are for non-commercial research only.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import UsageError, first_line
from .base import WORK_SIDE, FaceFrame, RegionMasks, finish
from .pretrained import folder_identity, local_model_folder

# a parser class -> the label names that mean it (after lower-casing, non-alphanumerics -> "_")
LABEL_NAMES = {
    "skin": ("skin", "face_skin"),
    "nose": ("nose",),
    "eyeglasses": ("eye_g", "eyeglass", "eyeglasses", "glasses", "eye_glasses"),
    "left_eye": ("l_eye", "left_eye", "eye_l"),
    "right_eye": ("r_eye", "right_eye", "eye_r"),
    "left_eyebrow": ("l_brow", "left_brow", "left_eyebrow", "brow_l"),
    "right_eyebrow": ("r_brow", "right_brow", "right_eyebrow", "brow_r"),
    "left_ear": ("l_ear", "left_ear"),
    "right_ear": ("r_ear", "right_ear"),
    "mouth_opening": ("mouth", "inner_mouth", "teeth"),
    "upper_lip": ("u_lip", "upper_lip"),
    "lower_lip": ("l_lip", "lower_lip"),
    "hair": ("hair",),
    "hat": ("hat", "headwear"),
    "earrings": ("ear_r", "earring", "earrings"),
    "necklace": ("neck_l", "necklace"),
    "neck": ("neck",),
    "clothes": ("cloth", "clothes", "clothing"),
}
# fmu region -> the parser classes it is the union of. Which side CelebAMask-HQ calls "l_" is not
# documented, so only the two-sided regions are offered.
REGION_CLASSES = {
    "face": ("skin", "nose", "left_eye", "right_eye", "left_eyebrow", "right_eyebrow", "mouth_opening",
             "upper_lip", "lower_lip", "eyeglasses"),
    "skin": ("skin", "nose"),
    "eyes": ("left_eye", "right_eye"),
    "eyebrows": ("left_eyebrow", "right_eyebrow"),
    "ears": ("left_ear", "right_ear"),
    "nose": ("nose",),
    "mouth": ("mouth_opening", "upper_lip", "lower_lip"),
    "lips": ("upper_lip", "lower_lip"),
    "upper_lip": ("upper_lip",),
    "lower_lip": ("lower_lip",),
    "eyeglasses": ("eyeglasses",),
    "hair": ("hair",),
    "hat": ("hat",),
    "earrings": ("earrings",),
    "necklace": ("necklace",),
    "neck": ("neck",),
    "clothes": ("clothes",),
}
_ALIASES = {alias: cls for cls, names in LABEL_NAMES.items() for alias in names}


def normalise_label(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


def label_classes(id2label: dict) -> dict[str, list[int]]:
    """Parser class -> the label ids (from the model's own id2label) that carry it."""
    found: dict[str, list[int]] = {}
    for index, name in id2label.items():
        cls = _ALIASES.get(normalise_label(name))
        if cls is not None:
            found.setdefault(cls, []).append(int(index))
    return found


def _processor_class():
    # The PIL processor needs no torchvision (the default one does, and it is absent here).
    try:
        from transformers import SegformerImageProcessorPil  # deferred: heavy (transformers)

        return SegformerImageProcessorPil
    except ImportError:  # older transformers: the default processor is the PIL one
        from transformers import SegformerImageProcessor  # deferred: heavy (transformers)

        return SegformerImageProcessor


class SegformerParser:
    def __init__(self, source: str, device: str | None = None):
        # deferred: heavy (torch, transformers); core.regions imports this module for every parser kind
        import torch
        from transformers import AutoConfig, SegformerForSemanticSegmentation

        what = "--parser segformer:"
        folder = local_model_folder(source, what.rstrip(":"))
        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
            if config.model_type != "segformer":
                raise ValueError(f"its config is a {config.model_type!r} model, not segformer")
            self.model = SegformerForSemanticSegmentation.from_pretrained(folder, local_files_only=True).eval()
            self.processor = _processor_class().from_pretrained(folder, local_files_only=True)
        except Exception as exc:  # noqa: BLE001  a broken folder fails in many ways (OSError, ValueError, safetensors)
            raise UsageError(f"{what}{source}: cannot load a SegFormer face parser: {first_line(exc, 160)}") from None
        self.classes = label_classes(self.model.config.id2label)
        if not self.classes:
            labels = ", ".join(str(v) for v in list(self.model.config.id2label.values())[:8])
            raise UsageError(f"{what}{source}: none of its labels ({labels}, ...) is a face-parsing class "
                             f"fmu knows ({', '.join(sorted(_ALIASES))})")
        self.name = f"segformer:{source}"
        self.regions = tuple(r for r, parts in REGION_CLASSES.items() if any(c in self.classes for c in parts))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self._identity = folder_identity(folder)

    def identity(self) -> dict:
        return {"parser": "segformer", "model": self._identity, "work": WORK_SIDE}

    def labels(self, frame_rgb: np.ndarray) -> np.ndarray:
        """(WORK_SIDE, WORK_SIDE) label ids of the face frame (the model's argmax)."""
        import torch  # deferred: heavy (torch), as in __init__

        inputs = self.processor(images=[frame_rgb], return_tensors="pt").to(self.device)
        with torch.no_grad():
            outputs = self.model(**inputs)
        seg = self.processor.post_process_semantic_segmentation(outputs, target_sizes=[frame_rgb.shape[:2]])[0]
        return seg.cpu().numpy()

    def parse(self, image_rgb: np.ndarray, box=None) -> RegionMasks:
        shape = image_rgb.shape[:2]
        frame = FaceFrame.around(box, shape)
        labels = self.labels(frame.crop(np.asarray(image_rgb, dtype=np.uint8)))
        masks = {}
        for region in self.regions:
            ids = [i for cls in REGION_CLASSES[region] for i in self.classes.get(cls, [])]
            masks[region] = frame.paste(np.isin(labels, ids))
        return finish(shape, masks, {}, self.name, self.regions)
