"""Face-MakeUpV2 sampling on diffusers components.

The denoising loop is the method's own: the ShadingNet (a ControlNet) cross-attends to the 4
identity tokens instead of the text, which no stock diffusers pipeline does. Everything else is
the library's: `encode_prompt`, `prepare_latents`, the scheduler, the IP-Adapter processors and
FaceID-Plus projection inside the UNet, the VAE and image post-processing — so with the identity
channel off the loop reproduces `StableDiffusionPipeline` exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .adapter import AdapterConfig, image_projection
from .settings import Settings  # noqa: F401  (re-exported: callers import it from here)

# the authors' demo (demo/demo_v5/web_demo.py) uses this negative prompt
DEFAULT_NEGATIVE = ("black image, Easy Negative, worst quality, low quality, lowers, monochrome, grayscales, "
                    "skin spots, acnes, skin blemishes, age spot, 6 more fingers on one hand, deformity, bad legs")


@dataclass
class Request:
    prompt: str
    id_embedding: np.ndarray          # (D,) from the face backend
    face_crop: np.ndarray             # (S, S, 3) uint8 aligned crop
    seed: int
    negative_prompt: str | None = None
    condition: np.ndarray | None = None   # (H, W) uint8 shading render, or None


@dataclass
class Timings:
    model_seconds: float = 0.0        # inside UNet / ShadingNet calls


@dataclass
class FaceMakeUp:
    pipe: object                      # diffusers StableDiffusionPipeline (components only)
    cfg: AdapterConfig
    shading_net: object | None = None
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    timings: Timings = field(default_factory=Timings)

    @property
    def unet(self):
        return self.pipe.unet

    def set_id_scale(self, scale: float) -> None:
        for proc in self.unet.attn_processors.values():
            if hasattr(proc, "to_k_ip"):
                proc.scale = [scale]

    @torch.no_grad()
    def clip_face_features(self, crops: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate CLIP hidden states of the face crops and of blank crops (the unconditional
        branch, as diffusers' `prepare_ip_adapter_image_embeds` does)."""
        pixels = self.pipe.feature_extractor(images=list(crops), return_tensors="pt").pixel_values
        pixels = pixels.to(self.device, self.dtype)
        enc = self.pipe.image_encoder
        cond = enc(pixels, output_hidden_states=True).hidden_states[-2]
        uncond = enc(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
        return cond, uncond

    def _timed(self, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.timings.model_seconds += time.perf_counter() - start
        return out

    def identity_inputs(self, id_embeddings: torch.Tensor, clip_embeds: torch.Tensor,
                        s_scale: float) -> dict:
        """UNet `added_cond_kwargs` for a batch: ID embeddings (B, D) and the face crops'
        penultimate CLIP states (B, seq, hidden). The projection reads the CLIP states from an
        attribute (diffusers' FaceID-Plus design), so they are set here."""
        proj = image_projection(self.unet)
        proj.clip_embeds = clip_embeds.unsqueeze(1)  # (B, 1, seq, hidden): one face image per sample
        proj.shortcut = True                         # PlusV2: ID-embedding shortcut
        proj.shortcut_scale = s_scale
        return {"image_embeds": [id_embeddings.unsqueeze(1)]}

    def id_tokens(self, added: dict) -> torch.Tensor:
        """The 4 ID tokens per sample, (B, 4, C): the ShadingNet's only cross-attention input."""
        tokens = self.unet.encoder_hid_proj(added["image_embeds"])[0]
        return tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])

    def predict_noise(self, latents: torch.Tensor, t, text: torch.Tensor, added: dict | None,
                      control: torch.Tensor | None = None, shading_scale: float = 0.0,
                      id_tokens: torch.Tensor | None = None, lora_scale: float | None = None):
        """One ε prediction: ShadingNet residuals (when a condition is given) into the UNet."""
        down = mid = None
        if control is not None and self.shading_net is not None and shading_scale > 0:
            if id_tokens is None:
                id_tokens = self.id_tokens(added)
            down, mid = self._timed(
                self.shading_net, latents, t, encoder_hidden_states=id_tokens, controlnet_cond=control,
                conditioning_scale=shading_scale, return_dict=False)
        has_lora = bool(getattr(self.unet, "peft_config", None))
        cross_kwargs = {"scale": lora_scale} if has_lora and lora_scale is not None else None
        return self._timed(
            self.unet, latents, t, encoder_hidden_states=text, added_cond_kwargs=added,
            cross_attention_kwargs=cross_kwargs, down_block_additional_residuals=down,
            mid_block_additional_residual=mid, return_dict=False)[0]

    @torch.no_grad()
    def generate(self, requests: list[Request], settings: Settings, callback=None) -> list[np.ndarray]:
        """Denoise one batch of requests that share `settings`; returns (H, W, 3) uint8 images."""
        pipe, unet, n = self.pipe, self.unet, len(requests)
        do_cfg = settings.guidance_scale > 1.0
        identity_on = settings.id_scale > 0
        shading_on = (self.shading_net is not None and settings.shading_scale > 0 and identity_on
                      and all(r.condition is not None for r in requests))

        prompts = [r.prompt for r in requests]
        negatives = [r.negative_prompt if r.negative_prompt is not None else DEFAULT_NEGATIVE
                     for r in requests]
        prompt_embeds, negative_embeds = pipe.encode_prompt(
            prompts, self.device, 1, do_cfg, negatives if do_cfg else None)
        text = torch.cat([negative_embeds, prompt_embeds]) if do_cfg else prompt_embeds

        added = None
        if getattr(unet, "encoder_hid_proj", None) is not None:
            self.set_id_scale(settings.id_scale if identity_on else 0.0)
            ids = torch.from_numpy(np.stack([r.id_embedding for r in requests])).to(self.device, self.dtype)
            clip_cond, clip_uncond = self.clip_face_features([r.face_crop for r in requests])
            if do_cfg:
                ids, clip = torch.cat([torch.zeros_like(ids), ids]), torch.cat([clip_uncond, clip_cond])
            else:
                clip = clip_cond
            added = self.identity_inputs(ids, clip, settings.s_scale)

        pipe.scheduler.set_timesteps(settings.steps, device=self.device)
        generators = [torch.Generator("cpu").manual_seed(int(r.seed)) for r in requests]
        latents = pipe.prepare_latents(n, unet.config.in_channels, settings.height, settings.width,
                                       self.dtype, self.device, generators)
        extra_step = pipe.prepare_extra_step_kwargs(generators, 0.0)

        control = id_tokens = None
        if shading_on:
            cond = np.stack([np.repeat(r.condition[..., None], 3, axis=2) for r in requests])
            cond = torch.from_numpy(cond).permute(0, 3, 1, 2).to(self.device, self.dtype) / 255.0
            control = torch.cat([cond, cond]) if do_cfg else cond
            id_tokens = self.id_tokens(added)  # constant over the steps: computed once

        # LoRA belongs to the identity channel: trained with the ID tokens, off with them.
        lora_scale = settings.lora_scale if identity_on else 0.0
        for i, t in enumerate(pipe.scheduler.timesteps):
            model_in = torch.cat([latents] * 2) if do_cfg else latents
            model_in = pipe.scheduler.scale_model_input(model_in, t)
            noise = self.predict_noise(model_in, t, text, added, control, settings.shading_scale,
                                       id_tokens, lora_scale)
            if do_cfg:
                uncond, cond_pred = noise.chunk(2)
                noise = uncond + settings.guidance_scale * (cond_pred - uncond)
            latents = pipe.scheduler.step(noise, t, latents, **extra_step, return_dict=False)[0]
            if callback is not None:
                callback(i + 1, settings.steps)

        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        images = pipe.image_processor.postprocess(image, output_type="np", do_denormalize=[True] * n)
        return [(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in images]
