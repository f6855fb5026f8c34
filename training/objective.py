"""One training step's losses on a batch: the noise, the forward pass, and

    loss = MSE(ε̂, ε) + λ_map · L_map + L_id          (L_id's weights carry λ_id and the t range)

with the caption / CLIP-image drops the authors train with. The loss terms themselves are the pure
functions of losses.py; this module feeds them from the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .losses import attention_map_loss, identity_loss, identity_loss_weights, predict_x0, total_attention_map_loss


class Denoiser(torch.nn.Module):
    """The trainable forward pass as one module (what DDP wraps): identity channel + ShadingNet
    + UNet -> ε̂. Holds the UNet and ShadingNet as children; the FaceMakeUp only by reference."""

    def __init__(self, model, cfg: TrainConfig):
        super().__init__()
        self.unet, self.shading_net = model.unet, model.shading_net
        self.__dict__["model"] = model
        self.s_scale, self.shading_scale = cfg.s_scale, cfg.shading_scale

    def forward(self, noisy, timesteps, text, id_embeddings, clip_embeds, condition):
        model = self.model
        added = model.identity_inputs(id_embeddings, clip_embeds, self.s_scale)
        tokens = model.id_tokens(added)
        return model.predict_noise(noisy, timesteps, text, added, condition, self.shading_scale, tokens)


@dataclass
class Frozen:
    """Frozen helpers the loss needs besides the trained modules."""

    model: object            # FaceMakeUp (VAE, text encoder, image encoder, tokenizer)
    noise_scheduler: object  # DDPMScheduler with the base model's betas
    id_encoder: object | None
    store: object            # AttentionStore of the text cross-attention maps
    empty_ids: torch.Tensor  # the tokens of "" (caption drop)


def compute_losses(denoiser, frozen: Frozen, batch: dict, cfg: TrainConfig, generator: torch.Generator,
                   device: torch.device, weight_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The loss terms of one batch (`loss` = their weighted sum, the others detached for logging).

    Dtypes are explicit at every hand-over: the frozen VAE, text and image encoders run in
    `weight_dtype` (bf16 / fp16 under mixed precision) and their outputs go on as float32, the
    trainable forward runs under accelerate's autocast, the noise and its target stay float32,
    and the identity-loss encoder works in float32 (its gradient reaches the decoded image)."""
    model, sched = frozen.model, frozen.noise_scheduler
    vae, n = model.pipe.vae, batch["pixels"].shape[0]
    f32 = torch.float32
    pixels = batch["pixels"].to(device, weight_dtype)

    def rand(*shape):  # every random draw comes from this rank's generator (exact resume)
        return torch.rand(*shape, generator=generator).to(device)

    with torch.no_grad():
        latents = (vae.encode(pixels).latent_dist.sample(generator=generator) * vae.config.scaling_factor).to(f32)
        # caption drop (5 %): the empty caption, and no L_map pairs for that sample
        keep_caption = rand(n) >= cfg.caption_drop
        ids = torch.where(keep_caption[:, None], batch["input_ids"].to(device), frozen.empty_ids.to(device))
        text = model.pipe.text_encoder(ids)[0].to(f32)
        # image drop (50 %): the CLIP image input zeroed, as the authors do
        clip_cond, clip_blank = model.pipe.encode_image(batch["face_crop"], device, 1, output_hidden_states=True)
        keep_image = (rand(n) >= cfg.image_drop)[:, None, None]
        clip = torch.where(keep_image, clip_cond, clip_blank).to(f32)
    noise = torch.randn(latents.shape, generator=generator).to(device, f32)
    timesteps = torch.randint(0, sched.config.num_train_timesteps, (n,), generator=generator).to(device)
    noisy = sched.add_noise(latents, noise, timesteps).to(f32)

    eps = denoiser(noisy, timesteps, text, batch["id_embedding"].to(device, f32),
                   clip, batch["condition"].to(device, f32))
    mse = F.mse_loss(eps.float(), noise.float())

    tokens = [t if keep else [[] for _ in t] for t, keep in zip(batch["token_indices"], keep_caption.tolist())]
    l_map = total_attention_map_loss([attention_map_loss(m, batch["masks"], tokens) for m in frozen.store.values()])

    weights = identity_loss_weights(timesteps, cfg.id_t_min, cfg.id_t_max, cfg.lambda_id)
    l_id = torch.zeros((), device=device)
    if frozen.id_encoder is not None and bool((weights > 0).any()):
        x0 = predict_x0(eps, noisy, timesteps, sched)
        decoded = vae.decode((x0 / vae.config.scaling_factor).to(weight_dtype)).sample
        generated = (decoded.float() / 2 + 0.5).clamp(0, 1)
        boxes = batch["face_box"].to(device)  # pixel coordinates: the crop works in float64
        with torch.no_grad():
            reference = frozen.id_encoder((batch["pixels"].to(device, f32) / 2 + 0.5).clamp(0, 1), boxes)
        l_id = identity_loss(reference, frozen.id_encoder(generated, boxes), weights)

    total = mse + cfg.lambda_map * l_map + l_id
    return {"loss": total, "mse": mse.detach(), "map": l_map.detach(), "id": l_id.detach()}
