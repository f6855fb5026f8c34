"""CLIP-T and CLIP-I with a transformers `CLIPModel`.

CLIP-T = 100 x cosine(text embedding of the prompt, image embedding of the output)
         (the usual "CLIP score" scale; the prompt is truncated to CLIP's 77 tokens).
CLIP-I = cosine(image embedding of the reference, image embedding of the output).
Embeddings are the projected pooled outputs (`text_projection`, `visual_projection`), the
same vectors `CLIPModel` uses for its logits. Default model: openai/clip-vit-large-patch14
(the SD1.5 text encoder's family), from a local folder or the Hugging Face cache only.
"""

from __future__ import annotations

import numpy as np

from .features import image_features, normalise
from .weights import from_pretrained_local

DEFAULT_CLIP = "openai/clip-vit-large-patch14"


def _image_processor_class():
    # The PIL processor needs no torchvision (the default one does, and it is absent here).
    try:
        from transformers import CLIPImageProcessorPil  # deferred: heavy (transformers)

        return CLIPImageProcessorPil
    except ImportError:  # older transformers: the default processor is the PIL one
        from transformers import CLIPImageProcessor  # deferred: heavy (transformers)

        return CLIPImageProcessor


def _pooled(out):
    return out if hasattr(out, "shape") else out.pooler_output


class ClipScorer:
    def __init__(self, name_or_path: str | None = None, device: str = "cpu", batch_size: int = 16, dtype=None):
        # deferred: heavy (transformers)
        from transformers import CLIPModel, CLIPTokenizer

        self.source = str(name_or_path or DEFAULT_CLIP)
        self.model = from_pretrained_local(CLIPModel, self.source, "CLIP", "--clip-model").to(device, dtype).eval()
        self.tokenizer = from_pretrained_local(CLIPTokenizer, self.source, "CLIP tokenizer", "--clip-model")
        self.processor = from_pretrained_local(_image_processor_class(), self.source, "CLIP image processor",
                                               "--clip-model")
        self.device, self.batch_size = device, batch_size

    def image_embeddings(self, images: list[np.ndarray]) -> np.ndarray:
        return image_features(self.processor, lambda px: _pooled(self.model.get_image_features(pixel_values=px)),
                              images, self.batch_size, self.device, self.model.dtype, self.model.config.projection_dim)

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        import torch  # deferred: heavy (torch)

        out = []
        max_len = min(77, self.model.config.text_config.max_position_embeddings)
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                 max_length=max_len, return_tensors="pt")
            with torch.inference_mode():
                feats = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                     attention_mask=tok["attention_mask"].to(self.device))
            out.append(_pooled(feats).float().cpu().numpy())
        return normalise(np.concatenate(out)) if out else np.zeros((0, self.model.config.projection_dim), np.float32)


def clip_t(text_emb: np.ndarray, image_emb: np.ndarray) -> np.ndarray:
    """Row-wise 100 x cosine of already-normalised embeddings."""
    return 100.0 * np.sum(text_emb * image_emb, axis=-1)


def clip_i(ref_emb: np.ndarray, out_emb: np.ndarray) -> np.ndarray:
    return np.sum(ref_emb * out_emb, axis=-1)
