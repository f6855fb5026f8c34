"""FaceMakeUp, the model: SD1.5 components + fmu's adapter (identity channel, identity LoRA,
ShadingNet), loaded and saved the diffusers way.

- `FaceMakeUp.from_pretrained(base, adapter)`: a base model (load.py) + an adapter checkpoint
  (fmu's own, the authors' `model.bin`, h94's files: convert.py reads them all).
- `save_pretrained(path)`: fmu's adapter file (`adapter.safetensors`), which `from_pretrained`
  reads back to identical tensors.
- `from_pipe(pipe, cfg)` / `from_base(base, ...)`: a fresh, untrained adapter on base components
  (training from scratch, the presets).
- `load_lora_weights` / `save_lora_weights`: finetune LoRA files (lora.py). `lora_weights` says
  which weight each LoRA has in a batch.
- Features as calls after `from_pretrained`, diffusers' pattern, in this order: `set_scheduler`,
  `enable_vae_slicing`, `enable_vae_tiling`, `load_speed_lora` (a few-step LoRA, few_step.py;
  before the offload hooks, which wrap the modules it adds to), `enable_model_cpu_offload`,
  `set_vae_decoder` (after the offload: it puts the decoder on the model's device, which the offload
  sets for a model loaded on the CPU), `compile` (last: it compiles the modules as they are then).
  `fmu generate` (runner/worker.py) makes them in this order.

Besides, the forward pieces the sampling loop (pipeline.py) and the trainer share: the identity
inputs of the UNet, the 4 ID tokens, one ε prediction with the ShadingNet's residuals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..digests import file_digest
from ..errors import UsageError, first_line
from . import adapter as A
from . import few_step, pipeline
from . import lora as L
from .convert import load_adapter_any
from .load import load_base, make_scheduler
from .pipeline import Request, Timings
from .settings import Settings


def _check_offload_device(device: torch.device) -> None:
    if device.type == "cpu":
        raise UsageError(f"--offload moves models between CPU and an accelerator; it needs a cuda, xpu or "
                         f"mps device, not {device}")


@dataclass
class FaceMakeUp:
    pipe: object                      # diffusers StableDiffusionPipeline (components only)
    cfg: A.AdapterConfig
    shading_net: object | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    timings: Timings | None = None     # default: a clock on `device`
    decoder: object | None = None      # a VAE that decodes instead of pipe.vae (--vae-decoder tiny:...)
    adapter_sha256: str | None = None  # the adapter file's digest when loaded from one (a LoRA records it)
    lora_scales: dict = field(default_factory=dict)  # own weight of the finetune / speed LoRA (default 1)

    def __post_init__(self):
        if self.timings is None:
            self.timings = Timings(self.device)

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(cls, base: str | Path, adapter: str | Path | None, *, device: str = "cpu",
                        dtype: torch.dtype = torch.float32, vae_dtype: torch.dtype | None = None,
                        offline: bool = True, shading: bool = True, fresh_shading: bool = False,
                        image_encoder: str | Path | None = None, lora: str | Path | None = None,
                        vae: str | Path | None = None, base_config: str | Path | None = None) -> FaceMakeUp:
        """The model from a base (`load.load_base`: diffusers folder, hub id in the local cache,
        single file + `base_config`) and `adapter`: any checkpoint `convert.load_adapter_any`
        reads; `lora`: a separate LoRA file for IP-Adapter checkpoints (h94's *_lora.safetensors).
        Only what decides what loads is a keyword; the features are calls afterwards (see the
        module's docstring for their order).

        `shading`: load the adapter's ShadingNet; `fresh_shading`: when it has none, start an
        untrained one (training). `dtype`: every component's (`vae_dtype`: the VAE's, when it
        differs); the model is on `device` (for CPU offload load on "cpu" and name the
        accelerator in `enable_model_cpu_offload(device)`: nothing lands there before the hooks)."""
        dev = torch.device(device)
        if adapter is None:
            raise UsageError("an adapter checkpoint is required (--adapter)")
        pipe = load_base(base, dev, dtype, offline, image_encoder, vae=vae, base_config=base_config,
                         vae_dtype=vae_dtype)
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
        digest = file_digest(adapter) if Path(adapter).is_file() else None
        model = cls(pipe=pipe, cfg=cfg, shading_net=shading_net, device=dev, dtype=dtype, adapter_sha256=digest)
        unet.to(dev, dtype).eval()
        if shading_net is not None:
            shading_net.to(dev, dtype).eval()
        model.set_lora_weights(model.lora_weights(identity_on=True))
        return model

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
        self.lora_scales[adapter_name] = float(scale)
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

    # ------------------------------------------------------------------ features (diffusers' pattern)

    def set_scheduler(self, name: str) -> None:
        """The sampler by fmu's name (ddim, ddim-trailing, euler, dpm++, lcm, tcd), on the current
        scheduler's noise schedule."""
        self.pipe.scheduler = make_scheduler(name, self.pipe.scheduler.config)

    def enable_vae_slicing(self) -> None:
        """Decode a batch one image at a time (less memory, same images)."""
        self.pipe.vae.enable_slicing()

    def enable_vae_tiling(self) -> None:
        """Decode large images in overlapping tiles (less memory at 1024² and up)."""
        self.pipe.vae.enable_tiling()

    def load_speed_lora(self, source: str | Path, scale: float = 1.0, *, offline: bool = True) -> None:
        """A few-step LoRA (LCM / TCD / Hyper-SD: file, folder or hub id in the cache) as adapter
        `fmu_speed` with weight `scale`; pair it with its sampler (`set_scheduler("lcm")`, ...).
        Call it before `enable_model_cpu_offload`."""
        few_step.load_speed_lora(self.pipe, source, offline)
        self.lora_scales[L.SPEED_ADAPTER] = float(scale)
        # peft keeps a new adapter in fp32 under a half-precision model
        self.pipe.text_encoder.to(dtype=self.dtype)
        self.unet.to(dtype=self.dtype).eval()  # its new layers (dropout) as the rest: inference
        self.set_lora_weights(self.lora_weights(identity_on=True))

    def enable_model_cpu_offload(self, device: str | torch.device | None = None) -> None:
        """diffusers' model CPU offload: accelerate hooks move each model to the accelerator
        (`device`, default the model's) when it runs; the ShadingNet gets its own hook and stays
        there once used. A model loaded on "cpu" becomes a model of `device`."""
        from accelerate import cpu_offload_with_hook  # deferred: only offloading runs need it

        dev = self.device if device is None else torch.device(device)
        _check_offload_device(dev)
        if dev != self.device:
            self.device, self.timings = dev, Timings(dev)
        self.pipe.enable_model_cpu_offload(device=dev)
        if self.shading_net is not None:
            cpu_offload_with_hook(self.shading_net, self.device)

    def set_vae_decoder(self, spec: str | None, *, dtype: torch.dtype | None = None, offline: bool = True) -> None:
        """`tiny:<folder or hub id>`: an AutoencoderTiny (TAESD) decodes instead of the VAE (in
        `dtype`, default the VAE's); None: the VAE again."""
        self.decoder = None if spec is None else few_step.load_tiny_decoder(
            spec, self.unet.config.out_channels, dtype or self.pipe.vae.dtype, self.device, offline)

    def compile(self) -> None:
        """`torch.compile` of the UNet and the ShadingNet, in place."""
        self.unet.compile()
        if self.shading_net is not None:
            self.shading_net.compile()

    # ------------------------------------------------------------------ forward pieces

    @property
    def unet(self):
        return self.pipe.unet

    def _timed(self, fn, *args, **kwargs):
        """A model call, its time added to `timings` (device time on an accelerator: the call
        itself only queues the kernels there)."""
        return self.timings.clock.time(fn, *args, **kwargs)

    def lora_weights(self, identity_on: bool, id_weight: float = 1.0) -> dict[str, float]:
        """The weight of every LoRA on the model for one batch. The identity LoRA (`fmu_id`, weight
        `id_weight`) and a finetune LoRA (`fmu_ft`, its own scale) belong to the identity channel:
        trained with the ID tokens, they are off (0) when it is off. A speed LoRA (`fmu_speed`)
        keeps its weight whatever the identity channel does: the sampler needs it."""
        weights = {name: self.lora_scales.get(name, 1.0) for name in L.adapter_names(self.pipe)}
        if L.ID_ADAPTER in weights:
            weights[L.ID_ADAPTER] = id_weight
        if not identity_on:
            weights = {name: (w if name == L.SPEED_ADAPTER else 0.0) for name, w in weights.items()}
        return weights

    def set_lora_weights(self, weights: dict[str, float]) -> None:
        L.set_lora_weights(self.pipe, weights)

    def identity_inputs(self, id_embeddings: torch.Tensor, clip_embeds: torch.Tensor,
                        s_scale: float) -> dict:
        """UNet `added_cond_kwargs` for a batch: ID embeddings (B, D) and the face crops'
        penultimate CLIP states (B, seq, hidden); or (B, n, D) and (B, n, seq, hidden) for n people
        (masked_identity.py). The projection reads the CLIP states from an attribute (diffusers' FaceID-Plus
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
                      id_tokens: torch.Tensor | None = None, people=None):
        """One ε prediction: ShadingNet residuals (when a condition is given) into the UNet.
        `people`: a `people.PeopleBatch`: each person's ID tokens act in their own box only. The
        LoRAs act with the weights `set_lora_weights` gave them (no `scale` in the attention
        kwargs: diffusers multiplies every adapter by it, the speed LoRA too)."""
        down = mid = None
        if control is not None and self.shading_net is not None and shading_scale > 0:
            if id_tokens is None:
                id_tokens = self.id_tokens(added)
            shading = self.shading_net if people is None else partial(people.shading_residuals, self.shading_net)
            down, mid = self._timed(
                shading, latents, t, encoder_hidden_states=id_tokens, controlnet_cond=control,
                conditioning_scale=shading_scale, return_dict=False)
        cross_kwargs = people.cross_attention_kwargs if people is not None else None  # identity masks
        return self._timed(
            self.unet, latents, t, encoder_hidden_states=text, added_cond_kwargs=added,
            cross_attention_kwargs=cross_kwargs, down_block_additional_residuals=down,
            mid_block_additional_residual=mid, return_dict=False)[0]

    def generate(self, requests: list[Request], settings: Settings, callback=None) -> list[np.ndarray]:
        """Denoise one batch of requests that share `settings`; (H, W, 3) uint8 images (pipeline.py)."""
        return pipeline.generate(self, requests, settings, callback)
