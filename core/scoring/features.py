"""Batched, L2-normalised image features from a transformers model (CLIP-I, DINO)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)


def image_features(processor, forward: Callable, images: list[np.ndarray], batch_size: int, device, dtype,
                   dim: int) -> np.ndarray:
    """`forward(pixel_values) -> (B, dim)` over `images` in batches; (N, dim) unit vectors. The
    pixels go in as the model's `dtype`; the features come back as float32."""
    import torch  # deferred: heavy (torch)

    out = []
    for i in range(0, len(images), batch_size):
        px = processor(images=list(images[i:i + batch_size]), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out.append(forward(px.to(device, dtype)).float().cpu().numpy())
    return normalise(np.concatenate(out)) if out else np.zeros((0, dim), np.float32)
