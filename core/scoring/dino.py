"""DINO: cosine of self-supervised ViT-S/16 CLS features, reference vs output.

Model: facebook/dino-vits16 (transformers `ViTModel` layout, no pooler); the feature is the
CLS token of the last hidden state, as in DreamBooth's DINO metric. Preprocessing comes from
the model folder's preprocessor config (224 px, ImageNet mean/std for the hub model).
Loaded from a local folder or the Hugging Face cache only.
"""

from __future__ import annotations

import numpy as np

from .features import image_features
from .weights import from_pretrained_local

DEFAULT_DINO = "facebook/dino-vits16"


def _image_processor_class():
    try:
        from transformers import ViTImageProcessorPil  # deferred: heavy (transformers)

        return ViTImageProcessorPil
    except ImportError:
        from transformers import ViTImageProcessor  # deferred: heavy (transformers)

        return ViTImageProcessor


class DinoScorer:
    def __init__(self, name_or_path: str | None = None, device: str = "cpu", batch_size: int = 16, dtype=None):
        from transformers import ViTModel  # deferred: heavy (transformers)

        self.source = str(name_or_path or DEFAULT_DINO)
        self.model = from_pretrained_local(ViTModel, self.source, "DINO", "--dino-model", add_pooling_layer=False)
        self.model.to(device, dtype).eval()  # dtype None: as stored (fp32)
        self.processor = from_pretrained_local(_image_processor_class(), self.source, "DINO image processor",
                                               "--dino-model")
        self.device, self.batch_size = device, batch_size

    def embeddings(self, images: list[np.ndarray]) -> np.ndarray:
        """CLS token of the last layer, L2-normalised."""
        return image_features(self.processor, lambda px: self.model(pixel_values=px).last_hidden_state[:, 0],
                              images, self.batch_size, self.device, self.model.dtype, self.model.config.hidden_size)


def dino_similarity(ref_emb: np.ndarray, out_emb: np.ndarray) -> np.ndarray:
    return np.sum(ref_emb * out_emb, axis=-1)
