"""Several people in one image: each person's ID tokens act only inside that person's box.

Identity channel: diffusers' own IP-Adapter masking. The one FaceID-Plus adapter gets a list of
face images per sample (ID embeddings (B, n, D), penultimate CLIP states (B, n, seq, hidden) set on
the projection, as `FaceMakeUp.identity_inputs` does for one), and `IPAdapterAttnProcessor2_0`
attends to each person's tokens separately and adds each result only where that person's mask is
set: `cross_attention_kwargs={"ip_adapter_masks": [mask]}`, mask [1, n, H, W] from
`IPAdapterMaskProcessor.preprocess` (one adapter, so a one-element list). The text cross-attention is
not masked: the prompt acts everywhere. The LoRAs' weights are not in these kwargs: they are set
per adapter before the loop (`FaceMakeUp.set_lora_weights`).

3D channel: one ShadingNet pass per person (batched into one call), each seeing only that
person's render (the condition is 0 outside their box) and cross-attending to only that person's
ID tokens. Their residuals are combined as diffusers' MultiControlNetModel sums the residuals of
several ControlNets, except that each pass counts only inside its own box: a plain sum would let
person B's tokens shape the residuals inside A's box (B's pass produces residuals everywhere).
Weights per residual resolution: w_i = m_i / max(Σm, 1) + (1 - min(Σm, 1)) / n, m_i = the share of
each cell covered by box i. Inside box A alone that is exactly A's pass; where no box is, the mean
of the passes (each sees background there, as a one-person condition's background); overlaps
share. A single pass over the composed condition was the alternative: its cross-attention would
need per-query token masks, which diffusers' ControlNet processors do not offer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.image_processor import IPAdapterMaskProcessor
from PIL import Image

from ..boxes import Box, pixel_box


@dataclass
class PeopleInput:
    """The people of one request, in reference order."""

    embeddings: np.ndarray                  # (n, D) ID embeddings
    crops: list[np.ndarray]                 # n face crops for the CLIP image encoder
    boxes: tuple[Box, ...]                  # output-relative x0, y0, x1, y1
    conditions: np.ndarray | None = None    # (n, H, W) uint8: person i's render in box i, 0 elsewhere


def box_masks(boxes, width: int, height: int) -> np.ndarray:
    """(n, H, W) uint8 masks, 255 inside each box (in `pixel_box`'s rounding), 0 elsewhere."""
    masks = np.zeros((len(boxes), height, width), np.uint8)
    for mask, box in zip(masks, boxes):
        left, top, right, bottom = pixel_box(box, width, height)
        mask[top:bottom, left:right] = 255
    return masks


def ip_adapter_masks(boxes, width: int, height: int) -> torch.Tensor:
    """The boxes as diffusers' IP-Adapter masks of one adapter: [1, n, H, W] in {0, 1}."""
    images = [Image.fromarray(m) for m in box_masks(boxes, width, height)]
    masks = IPAdapterMaskProcessor().preprocess(images, height=height, width=width)
    return masks.reshape(1, len(images), height, width)


def blend_weights(boxes, width: int, height: int, size: tuple[int, int]) -> torch.Tensor:
    """(n, 1, 1, h, w) weights of each person's ShadingNet residuals at resolution `size` (see the
    module docstring): the box coverage of each cell (area average of the pixel masks), the
    uncovered rest shared equally."""
    masks = torch.from_numpy(box_masks(boxes, width, height)).float().div(255.0)
    cover = F.adaptive_avg_pool2d(masks[:, None], size)[:, 0]            # (n, h, w)
    total = cover.sum(0)
    weights = cover / total.clamp(min=1.0) + (1.0 - total.clamp(max=1.0)) / len(boxes)
    return weights[:, None, None]


class PeopleBatch:
    """What the sampling loop needs for a batch of requests that share one layout."""

    def __init__(self, requests, width: int, height: int, device, dtype):
        people = [r.people for r in requests]
        boxes = people[0].boxes
        if any(p.boxes != boxes for p in people):
            raise ValueError("a batch of several people shares one layout (the plan groups rows by layout)")
        self.requests, self.boxes, self.n = requests, tuple(boxes), len(boxes)
        self.width, self.height, self.device, self.dtype = width, height, device, dtype
        masks = ip_adapter_masks(self.boxes, width, height).to(device, dtype)
        self.cross_attention_kwargs = {"ip_adapter_masks": [masks]}
        self._weights: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def of(cls, requests, width: int, height: int, device, dtype) -> PeopleBatch | None:
        """None for a batch of one-person requests; a batch must not mix the two."""
        several = [r.people is not None for r in requests]
        if not any(several):
            return None
        if not all(several):
            raise ValueError("a batch mixes one-person requests with requests of several people")
        return cls(requests, width, height, device, dtype)

    def identity(self, pipe, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ID embeddings (B, n, D) and the penultimate CLIP states of the people's face crops and of
        blank crops (the unconditional branch), (B, n, seq, hidden) each: one adapter, n images."""
        b = len(self.requests)
        ids = torch.from_numpy(np.stack([r.people.embeddings for r in self.requests])).to(device, self.dtype)
        crops = [crop for r in self.requests for crop in r.people.crops]
        cond, uncond = pipe.encode_image(crops, device, 1, output_hidden_states=True)
        return ids, cond.reshape(b, self.n, *cond.shape[1:]), uncond.reshape(b, self.n, *uncond.shape[1:])

    def control(self, do_cfg: bool) -> torch.Tensor:
        """(n, B', 3, H, W) conditions in [0, 1], person-major (B' = 2B under guidance)."""
        cond = np.stack([r.people.conditions for r in self.requests], axis=1)       # (n, B, H, W)
        cond = torch.from_numpy(cond).to(self.device, self.dtype)[:, :, None].expand(-1, -1, 3, -1, -1) / 255.0
        return torch.cat([cond, cond], dim=1) if do_cfg else cond

    def weights(self, size: tuple[int, int]) -> torch.Tensor:
        if size not in self._weights:
            self._weights[size] = blend_weights(self.boxes, self.width, self.height, size).to(self.device, self.dtype)
        return self._weights[size]

    def shading_residuals(self, net, latents, t, encoder_hidden_states, controlnet_cond, conditioning_scale,
                          return_dict=False):
        """The ShadingNet's (down, mid) residuals for all people: one pass per person, batched
        into one call, blended by box (module docstring). Called like the ShadingNet itself, with
        `encoder_hidden_states` = the ID tokens (B', n x tokens, C) and `controlnet_cond` from
        `control`."""
        n, b = self.n, latents.shape[0]
        tokens = encoder_hidden_states.reshape(b, n, -1, encoder_hidden_states.shape[-1])
        tokens = tokens.transpose(0, 1).reshape(n * b, -1, tokens.shape[-1])     # person-major
        down, mid = net(latents.repeat(n, 1, 1, 1), t, encoder_hidden_states=tokens,
                        controlnet_cond=controlnet_cond.reshape(n * b, *controlnet_cond.shape[2:]),
                        conditioning_scale=conditioning_scale, return_dict=False)
        return [self._blend(r, b) for r in down], self._blend(mid, b)

    def _blend(self, residual: torch.Tensor, b: int) -> torch.Tensor:
        per_person = residual.reshape(self.n, b, *residual.shape[1:])
        return (per_person * self.weights(tuple(residual.shape[-2:]))).sum(0)
