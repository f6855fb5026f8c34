"""FaceMakeUp, the model: SD1.5 components + fmu's adapter (identity channel, identity LoRA,
ShadingNet), loaded and saved the diffusers way.

- `FaceMakeUp.from_pretrained(base, adapter)`: a base model (load.py) + an adapter checkpoint
  (fmu's own, the authors' `model.bin`, h94's files: convert.py reads them all).
- `save_pretrained(path)`: fmu's adapter file (`adapter.safetensors`), which `from_pretrained`
  reads back to identical tensors.
- `from_pipe(pipe, cfg)` / `from_base(base, ...)`: a fresh, untrained adapter on base components
  (training from scratch, the presets).
- `load_lora_weights` / `save_lora_weights`: finetune LoRA files (lora.py).

Besides, the forward pieces the sampling loop (pipeline.py) and the trainer share: the identity
inputs of the UNet, the 4 ID tokens, one ε prediction with the ShadingNet's residuals.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..digests import file_digest
from ..errors import UsageError, first_line
from . import adapter as A
from . import lora as L
from . import pipeline
from .convert import load_adapter_any
from .load import load_base
from .pipeline import Request, Timings
from .settings import Settings


@dataclass
class FaceMakeUp:
    pipe: object                      # diffusers StableDiffusionPipeline (components only)
    cfg: A.AdapterConfig
    shading_net: object | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    timings: Timings = field(default_factory=Timings)
    adapter_sha256: str | None = None  # the adapter file's digest when loaded from one (a LoRA records it)

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(cls, base: str | Path, adapter: str | Path | None, *, device: str = "cpu",
                        dtype: torch.dtype = torch.float32, offline: bool = True, shading: bool = True,
                        fresh_shading: bool = False, image_encoder: str | Path | None = None,
                        lora: str | Path | None = None, vae: str | Path | None = None,
                        scheduler: str = "ddim", base_config: str | Path | None = None,
                        vae_slicing: bool = False, vae_tiling: bool = False, compile: bool = False,
                        offload: bool = False) -> FaceMakeUp:
        """The model from a base (`load.load_base`: diffusers folder, hub id in the local cache,
        single file + `base_config`) and `adapter`: any checkpoint `convert.load_adapter_any`
        reads; `lora`: a separate LoRA file for IP-Adapter checkpoints (h94's *_lora.safetensors).

        `shading`: load the adapter's ShadingNet; `fresh_shading`: when it has none, start an
        untrained one (training). `offload`: diffusers' model CPU offload (accelerate hooks move
        each model to the GPU when it runs); the ShadingNet gets its own hook and stays on the GPU
        once used. CUDA only. `compile`: `torch.compile` of the UNet and ShadingNet in place."""
        dev = torch.device(device)
        if offload and dev.type != "cuda":
            raise UsageError(f"--offload moves models between CPU and GPU; it needs a CUDA device, not {device}")
        if adapter is None:
            raise UsageError("an adapter checkpoint is required (--adapter)")
        pipe = load_base(base, dev, dtype, offline, image_encoder, vae=vae, scheduler=scheduler,
                         base_config=base_config, vae_slicing=vae_slicing, vae_tiling=vae_tiling,
                         move=not offload)
        unet = pipe.unet
        try:
            tensors, meta = load_adapter_any(Path(adapter), dict(unet.config), lora)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load adapter {adapter}: {exc}") from None
        cfg = A.AdapterConfig.from_dict(json.loads(meta["config"]))
        shading_net = None
        if shading and "shading_config" in meta:
            shading_net = A.shading_net_from_state(json.loads(meta["shading_config"]), A.split(tensors, "shading"))
        elif shading and fresh_shading:
            shading_net = A.new_shading_net(unet)  # from the plain UNet, before the identity channel
        A.install_identity_channel(pipe, cfg)
        if A.split(tensors, "lora"):
            L.add_lora(unet, cfg.lora_rank)
        try:
            A.load_adapter_state(unet, tensors)
        except RuntimeError as exc:
            raise UsageError(f"adapter {adapter} does not fit base model {base}: {first_line(exc, None)}") from None
        unet.to(dtype=dtype).eval()
        if shading_net is not None:
            shading_net.to(dtype=dtype).eval()
        if offload:
            from accelerate import cpu_offload_with_hook  # deferred: only offloading runs need it

            pipe.enable_model_cpu_offload(device=dev)
            if shading_net is not None:
                cpu_offload_with_hook(shading_net, dev)
        else:
            unet.to(dev)
            if shading_net is not None:
                shading_net.to(dev)
        if compile:
            unet.compile()
            if shading_net is not None:
                shading_net.compile()
        digest = file_digest(adapter) if Path(adapter).is_file() else None
        return cls(pipe=pipe, cfg=cfg, shading_net=shading_net, device=dev, dtype=dtype, adapter_sha256=digest)

    @classmethod
    def from_pipe(cls, pipe, cfg: A.AdapterConfig, *, device: str | torch.device | None = None) -> FaceMakeUp:
        """A fresh, untrained adapter (ShadingNet when `cfg.shading`) on a base pipeline's
        components; the model lives where the pipeline does unless `device` says otherwise."""
        shading_net = A.new_shading_net(pipe.unet) if cfg.shading else None  # before the identity channel
        A.install_identity_channel(pipe, cfg)
        L.add_lora(pipe.unet, cfg.lora_rank)
        dev = torch.device(device) if device is not None else pipe.device
        if shading_net is not None:
            shading_net.to(dev)
        return cls(pipe=pipe, cfg=cfg, shading_net=shading_net, device=dev, dtype=pipe.unet.dtype)

    @classmethod
    def from_base(cls, base: str | Path, *, device: str | torch.device = "cpu", offline: bool = True,
                  image_encoder: str | Path | None = None, **config) -> FaceMakeUp:
        """A fresh adapter on a base model (fp32, for training); `config`: AdapterConfig fields
        (id_embed_dim, lora_rank, ...), the sizes the base dictates filled in."""
        dev = torch.device(device)
        pipe = load_base(base, dev, torch.float32, offline, image_encoder)
        return cls.from_pipe(pipe, A.AdapterConfig.for_pipe(pipe, **config), device=dev)

    def save_pretrained(self, path: str | Path, extra_meta: dict | None = None) -> Path:
        """Write the adapter (projection, IP attention, identity LoRA, ShadingNet, config and
        `extra_meta`) to `path` (.safetensors) or `path/adapter.safetensors`; returns the file."""
        tensors, meta = A.adapter_state(self.unet, self.cfg, self.shading_net, extra_meta)
        return A.write_adapter(path, tensors, meta)

    def load_adapter_weights(self, path: str | Path) -> None:
        """An fmu adapter file's weights into this model's adapter, in place (resuming training)."""
        tensors, _ = A.read_adapter(Path(path))
        A.load_adapter_state(self.unet, tensors, self.shading_net)

    def load_lora_weights(self, path: str | Path, scale: float = 1.0,
                          adapter_name: str = L.FINETUNE_ADAPTER) -> None:
        """Put the finetune LoRA of `path` on top of the adapter, with weight `scale`."""
        L.apply_lora_file(self.unet, Path(path), scale, adapter_name)
        self.unet.to(self.device, self.dtype)

    def save_lora_weights(self, path: str | Path, adapter_name: str = L.FINETUNE_ADAPTER,
                          extra_meta: dict | None = None) -> None:
        """Write LoRA `adapter_name` with the identity of the adapter it rides on: the sha256 of the
        adapter file this model was loaded from. A model built fresh (`from_base`, never saved) has
        no file to name, so nothing is recorded and `fmu generate` warns when applying it; `fmu
        finetune` always starts from a file (--from)."""
        meta = dict(extra_meta or {})
        if self.adapter_sha256 is not None:
            meta[L.ADAPTER_KEY] = self.adapter_sha256
        L.write_lora_file(Path(path), self.unet, adapter_name, meta)

    # ------------------------------------------------------------------ forward pieces

    @property
    def unet(self):
        return self.pipe.unet

    def _timed(self, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.timings.model_seconds += time.perf_counter() - start
        return out

    def identity_inputs(self, id_embeddings: torch.Tensor, clip_embeds: torch.Tensor,
                        s_scale: float) -> dict:
        """UNet `added_cond_kwargs` for a batch: ID embeddings (B, D) and the face crops'
        penultimate CLIP states (B, seq, hidden); or (B, n, D) and (B, n, seq, hidden) for n people
        (people.py). The projection reads the CLIP states from an attribute (diffusers' FaceID-Plus
        design), so they are set here."""
        proj = A.image_projection(self.unet)
        if id_embeddings.ndim == 2:  # one face image per sample; (B, n, D) + (B, n, seq, hidden): n people
            id_embeddings, clip_embeds = id_embeddings.unsqueeze(1), clip_embeds.unsqueeze(1)
        proj.clip_embeds = clip_embeds               # (B, n, seq, hidden)
        proj.shortcut = True                         # PlusV2: ID-embedding shortcut
        proj.shortcut_scale = s_scale
        return {"image_embeds": [id_embeddings]}

    def id_tokens(self, added: dict) -> torch.Tensor:
        """The 4 ID tokens per sample, (B, 4, C) (n people: (B, n x 4, C), person after person): the
        ShadingNet's only cross-attention input."""
        tokens = self.unet.encoder_hid_proj(added["image_embeds"])[0]
        return tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])

    def predict_noise(self, latents: torch.Tensor, t, text: torch.Tensor, added: dict | None,
                      control: torch.Tensor | None = None, shading_scale: float = 0.0,
                      id_tokens: torch.Tensor | None = None, lora_scale: float | None = None,
                      people=None):
        """One ε prediction: ShadingNet residuals (when a condition is given) into the UNet.
        `people`: a `people.PeopleBatch`: each person's ID tokens act in their own box only."""
        down = mid = None
        if control is not None and self.shading_net is not None and shading_scale > 0:
            if id_tokens is None:
                id_tokens = self.id_tokens(added)
            shading = self.shading_net if people is None else partial(people.shading_residuals, self.shading_net)
            down, mid = self._timed(
                shading, latents, t, encoder_hidden_states=id_tokens, controlnet_cond=control,
                conditioning_scale=shading_scale, return_dict=False)
        has_lora = bool(getattr(self.unet, "peft_config", None))
        cross_kwargs = {"scale": lora_scale} if has_lora and lora_scale is not None else None
        if people is not None:  # the identity masks; the LoRA scale rides along (the UNet pops it)
            cross_kwargs = {**(cross_kwargs or {}), **people.cross_attention_kwargs}
        return self._timed(
            self.unet, latents, t, encoder_hidden_states=text, added_cond_kwargs=added,
            cross_attention_kwargs=cross_kwargs, down_block_additional_residuals=down,
            mid_block_additional_residual=mid, return_dict=False)[0]

    def generate(self, requests: list[Request], settings: Settings, callback=None) -> list[np.ndarray]:
        """Denoise one batch of requests that share `settings`; (H, W, 3) uint8 images (pipeline.py)."""
        return pipeline.generate(self, requests, settings, callback)
