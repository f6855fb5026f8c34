"""The method's own losses as pure functions on tensors: L_map, L_id and the x̂0 L_id decodes.

Loss = MSE(ε) + λ_map · Σ_layers L_map + L_id, where the per-sample L_id weights already carry
λ_id and the timestep range (see `identity_loss_weights`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def attention_map_loss(
    attn_probs: torch.Tensor,
    masks: Sequence[Sequence[torch.Tensor]],
    token_indices: Sequence[Sequence[Sequence[int]]],
) -> torch.Tensor:
    """Semantic-alignment loss of one text cross-attention layer.

    attn_probs: (B·heads, H·W, L) softmax over the L text tokens, batch-major (row b·heads + h),
    masks[b][k]: (1, h, w) float mask of span k of sample b, token_indices[b][k]: its token ids T.

        M   = 1[ bilinear(mask, H×W) > 0.5 ]
        A_c = attention map of token c ∈ T, plus A_mean = mean_{c∈T} A_c as one more channel
        l_{b,k} = mean_heads [ 1/(H·W·(|T|+1)) Σ_{c ∈ T ∪ {mean}} Σ_{y,x} (A_c(y,x) − M(y,x))² ]
        L = mean over the pairs (b, k) with T non-empty;  0 when there is none.

    Computed in float32 whatever the dtype of attn_probs (bf16 squares lose too much).
    """
    batch = len(masks)
    pair_losses = []
    if batch:
        heads = attn_probs.shape[0] // batch
        side = math.isqrt(attn_probs.shape[1])
        maps = attn_probs.float().reshape(batch, heads, side * side, attn_probs.shape[-1])
    for b in range(batch):
        for mask, tokens in zip(masks[b], token_indices[b]):
            if len(tokens) == 0:
                continue
            target = F.interpolate(mask[None].float().to(maps.device), size=(side, side), mode="bilinear")
            target = (target[0, 0] > 0.5).float().reshape(side * side, 1)
            chosen = maps[b][:, :, list(tokens)]                       # (heads, H·W, |T|)
            chosen = torch.cat([chosen, chosen.mean(-1, keepdim=True)], dim=-1)
            per_head = ((chosen - target) ** 2).mean(dim=(1, 2))       # over H·W and |T|+1
            pair_losses.append(per_head.mean())
    if not pair_losses:
        return attn_probs.new_zeros((), dtype=torch.float32)
    return torch.stack(pair_losses).mean()


def total_attention_map_loss(per_layer: Sequence[torch.Tensor]) -> torch.Tensor:
    """L_map = Σ_layers l_layer over the layers whose value is finite (NaN/Inf layers are skipped,
    as the authors do, so one degenerate layer does not poison the step); 0 when none is left."""
    finite = [value for value in per_layer if bool(torch.isfinite(value).all())]
    if not finite:
        device = per_layer[0].device if len(per_layer) else None
        return torch.zeros((), device=device)
    return torch.stack([value.float() for value in finite]).sum()


def identity_loss(
    ref_embedding: torch.Tensor,
    gen_embedding: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_id = (1/B) Σ_i w_i · (1 − cos(ref_i, gen_i)); w_i = 1 when weights is None.

    A plain mean of the weighted terms (not Σ w l / Σ w), so a weight of λ_id scales the loss
    and samples outside the timestep range (w = 0) contribute nothing.
    """
    per_sample = 1.0 - F.cosine_similarity(gen_embedding.float(), ref_embedding.float(), dim=-1)
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample)
    return per_sample.mean()


def identity_loss_weights(
    timesteps: torch.Tensor, t_min: int, t_max: int, lambda_id: float
) -> torch.Tensor:
    """w_i = λ_id when t_min ≤ t_i ≤ t_max, else 0 (x̂0 is too blurry to embed at high noise)."""
    inside = (timesteps >= t_min) & (timesteps <= t_max)
    return inside.float() * float(lambda_id)


def predict_x0(
    noise_pred: torch.Tensor,
    noisy_latents: torch.Tensor,
    timesteps: torch.Tensor,
    scheduler,
) -> torch.Tensor:
    """x̂0 from the model output, per sample, with the scheduler's ᾱ_t = alphas_cumprod[t]:

        epsilon:       x̂0 = (x_t − √(1−ᾱ_t) · ε̂) / √ᾱ_t
        v_prediction:  x̂0 = √ᾱ_t · x_t − √(1−ᾱ_t) · v̂
    """
    prediction_type = scheduler.config.prediction_type
    alpha_bar = scheduler.alphas_cumprod.to(noisy_latents.device)[timesteps.long()].float()
    alpha_bar = alpha_bar.reshape(-1, *([1] * (noisy_latents.ndim - 1)))
    x_t, model_out = noisy_latents.float(), noise_pred.float()
    if prediction_type == "epsilon":
        x0 = (x_t - (1 - alpha_bar).sqrt() * model_out) / alpha_bar.sqrt()
    elif prediction_type == "v_prediction":
        x0 = alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * model_out
    else:
        raise ValueError(f"predict_x0 supports epsilon and v_prediction, not {prediction_type!r}")
    return x0.to(noisy_latents.dtype)
