"""DINO: cosine of self-supervised ViT-S/16 CLS features, reference vs output.

Model: facebook/dino-vits16 (transformers `ViTModel` layout, no pooler); the feature is the
CLS token of the last hidden state, as in DreamBooth's DINO metric. Preprocessing comes from
the model folder's preprocessor config (224 px, ImageNet mean/std for the hub model).
Loaded from a local folder or the Hugging Face cache only.
"""

from __future__ import annotations

import numpy as np

from .weights import from_pretrained_local

DEFAULT_DINO = "facebook/dino-vits16"


def _image_processor_class():
    try:
        from transformers import ViTImageProcessorPil

        return ViTImageProcessorPil
    except ImportError:
        from transformers import ViTImageProcessor

        return ViTImageProcessor


class DinoScorer:
    def __init__(self, name_or_path: str | None = None, device: str = "cpu", batch_size: int = 16):
        from transformers import ViTModel

        self.source = str(name_or_path or DEFAULT_DINO)
        self.model = from_pretrained_local(ViTModel, self.source, "DINO", add_pooling_layer=False).to(device).eval()
        self.processor = from_pretrained_local(_image_processor_class(), self.source, "DINO image processor")
        self.device, self.batch_size = device, batch_size

    def embeddings(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        out = []
        for i in range(0, len(images), self.batch_size):
            px = self.processor(images=list(images[i:i + self.batch_size]), return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                cls = self.model(pixel_values=px.to(self.device)).last_hidden_state[:, 0]
            out.append(cls.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.model.config.hidden_size), np.float32)
        feats = np.concatenate(out)
        return feats / np.linalg.norm(feats, axis=-1, keepdims=True).clip(min=1e-12)


def dino_similarity(ref_emb: np.ndarray, out_emb: np.ndarray) -> np.ndarray:
    return np.sum(ref_emb * out_emb, axis=-1)
