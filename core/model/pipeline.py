"""Face-MakeUpV2 sampling: the denoising loop over a FaceMakeUp model (facemakeup.py).

The loop is the method's own: the ShadingNet (a ControlNet) cross-attends to the 4
identity tokens instead of the text, which no stock diffusers pipeline does. Everything else is
the library's: `encode_prompt`, `prepare_latents`, the scheduler, the IP-Adapter processors and
FaceID-Plus projection inside the UNet, the VAE and image post-processing — so with the identity
channel off the loop reproduces `StableDiffusionPipeline` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import TCDScheduler

from ..devices import ModelClock
from .masked_identity import PeopleBatch, PeopleInput
from .settings import TCD_ETA, Settings

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
    people: PeopleInput | None = None     # several people (masked_identity.py): their IDs, crops, boxes, renders


class Timings:
    """Seconds inside UNet / ShadingNet calls; on an accelerator the device's own time (events),
    so the efficiency figure built on it is true there."""

    def __init__(self, device="cpu"):
        self.clock = ModelClock(device)

    @property
    def model_seconds(self) -> float:
        return self.clock.seconds


@torch.no_grad()
def generate(model, requests: list[Request], settings: Settings, callback=None) -> list[np.ndarray]:
    """Denoise one batch of requests that share `settings` with `model` (a FaceMakeUp); returns
    (H, W, 3) uint8 images.

    Every tensor that crosses from one component to the next is put on the model's device and
    dtype here (ID embeddings, CLIP face states, shading condition, latents), and the latents on
    the decoder's dtype (a VAE kept in fp32 under a half-precision model). At guidance <= 1 there
    is no unconditional branch, so the zero face embedding that lives there is gone too: the
    identity then acts only through the conditional branch (no guidance on identity)."""
    pipe, unet, n = model.pipe, model.unet, len(requests)
    do_cfg = settings.guidance_scale > 1.0
    identity_on = settings.id_scale > 0
    shading_on = (model.shading_net is not None and settings.shading_scale > 0 and identity_on
                  and all(r.condition is not None for r in requests))
    people = PeopleBatch.of(requests, settings.width, settings.height, model.device, model.dtype)

    prompts = [r.prompt for r in requests]
    negatives = [r.negative_prompt if r.negative_prompt is not None else DEFAULT_NEGATIVE
                 for r in requests]
    prompt_embeds, negative_embeds = pipe.encode_prompt(
        prompts, model.device, 1, do_cfg, negatives if do_cfg else None)
    text = torch.cat([negative_embeds, prompt_embeds]) if do_cfg else prompt_embeds

    added = None
    if getattr(unet, "encoder_hid_proj", None) is not None:
        pipe.set_ip_adapter_scale(settings.id_scale if identity_on else 0.0)
        if people is None:
            ids = torch.from_numpy(np.stack([r.id_embedding for r in requests])).to(model.device, model.dtype)
            # penultimate CLIP states of the face crops and of blank crops (the unconditional branch)
            clip_cond, clip_uncond = pipe.encode_image([r.face_crop for r in requests], model.device, 1,
                                                       output_hidden_states=True)
        else:  # several people: one adapter with a list of face images per sample
            ids, clip_cond, clip_uncond = people.identity(pipe, model.device)
        if do_cfg:
            ids, clip = torch.cat([torch.zeros_like(ids), ids]), torch.cat([clip_uncond, clip_cond])
        else:
            clip = clip_cond
        added = model.identity_inputs(ids, clip.to(model.device, model.dtype), settings.s_scale)

    pipe.scheduler.set_timesteps(settings.steps, device=model.device)
    generators = [torch.Generator("cpu").manual_seed(int(r.seed)) for r in requests]
    latents = pipe.prepare_latents(n, unet.config.in_channels, settings.height, settings.width,
                                   model.dtype, model.device, generators)
    eta = settings.eta
    if eta is None:
        eta = TCD_ETA if isinstance(pipe.scheduler, TCDScheduler) else 0.0
    extra_step = pipe.prepare_extra_step_kwargs(generators, eta)

    control = id_tokens = None
    if shading_on and people is not None:
        control = people.control(do_cfg)  # each person's render in their box, one pass each
    elif shading_on:
        cond = np.stack([np.repeat(r.condition[..., None], 3, axis=2) for r in requests])
        cond = (torch.from_numpy(cond).permute(0, 3, 1, 2).float() / 255.0).to(model.device, model.dtype)
        control = torch.cat([cond, cond]) if do_cfg else cond
    if shading_on:
        id_tokens = model.id_tokens(added)  # constant over the steps: computed once

    # the identity (and finetune) LoRA belong to the identity channel: off with it; a speed LoRA stays
    model.set_lora_weights(model.lora_weights(identity_on, settings.id_lora_scale))
    for i, t in enumerate(pipe.scheduler.timesteps):
        model_in = torch.cat([latents] * 2) if do_cfg else latents
        model_in = pipe.scheduler.scale_model_input(model_in, t)
        noise = model.predict_noise(model_in, t, text, added, control, settings.shading_scale, id_tokens,
                                    people=people)
        if do_cfg:
            uncond, cond_pred = noise.chunk(2)
            noise = uncond + settings.guidance_scale * (cond_pred - uncond)
        latents = pipe.scheduler.step(noise, t, latents, **extra_step, return_dict=False)[0]
        if callback is not None:
            callback(i + 1, settings.steps)

    decoder = model.decoder if model.decoder is not None else pipe.vae
    latents = (latents / decoder.config.scaling_factor).to(decoder.dtype)
    image = decoder.decode(latents, return_dict=False)[0].float()
    images = pipe.image_processor.postprocess(image, output_type="np", do_denormalize=[True] * n)
    return [(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in images]
