"""The pieces of fmu's adapter: FaceID-PlusV2 projection, IP attention, identity LoRA, ShadingNet.

Structure comes from diffusers' own IP-Adapter loader (`pipe.load_ip_adapter`), fed a state dict
in the original IP-Adapter training layout (`image_proj`, `ip_adapter`) — the layout of the
authors' `model.bin` and of h94's files. A fresh adapter is built from a zero template of that
layout and then initialised the IP-Adapter way (image projection: default init; to_k_ip/to_v_ip:
copies of the UNet's to_k/to_v). The identity LoRA is the peft adapter `fmu_id` (lora.py); the
ShadingNet is a ControlNet copied from the plain UNet.

fmu's own checkpoint (`adapter.safetensors`) stores the modules' diffusers-layout weights under
`image_proj.`, `ip_attn.`, `lora.` and `shading.` with the sizes in the metadata, so loading
rebuilds the structure from the template and then loads every tensor strictly.
`FaceMakeUp.from_pretrained` / `save_pretrained` (facemakeup.py) are the way in and out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import ControlNetModel
from safetensors.torch import save
from torch import nn

from ..images import atomic_write_bytes
from . import lora as L
from .weights_io import ADAPTER_FORMAT, read_fmu_file

FORMAT = ADAPTER_FORMAT
ADAPTER_FILE = "adapter.safetensors"   # the file's name inside a folder
PERCEIVER_DEPTH = 4        # fixed by diffusers' FaceID-Plus loader
PERCEIVER_DIM_HEAD = 64    # idem: heads = to_q.out_features // 64


@dataclass
class AdapterConfig:
    id_embed_dim: int = 512          # ArcFace 512; dlib 128 for the tiny preset
    clip_hidden_dim: int = 1280      # CLIP ViT-H/14 hidden size
    embed_dims: int = 768            # perceiver width
    perceiver_heads: int = 12
    num_tokens: int = 4
    lora_rank: int = 128
    shading: bool = True
    face_crop: str = "aligned"       # the CLIP face image it was trained with (core.faces.crops)

    @classmethod
    def from_dict(cls, d: dict) -> AdapterConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @classmethod
    def for_pipe(cls, pipe, **fields) -> AdapterConfig:
        """The sizes a base pipeline's components dictate (CLIP width, UNet cross-attention
        width, 64-wide heads); everything else as given or the default."""
        cross = pipe.unet.config.cross_attention_dim
        return cls(**{"clip_hidden_dim": pipe.image_encoder.config.hidden_size, "embed_dims": cross,
                      "perceiver_heads": max(1, cross // PERCEIVER_DIM_HEAD), **fields})


def image_proj_template(cfg: AdapterConfig, cross_attention_dim: int) -> dict[str, torch.Tensor]:
    """Zero tensors with the original FaceID-Plus `image_proj` keys and shapes."""
    e, c, inner = cfg.embed_dims, cross_attention_dim, cfg.perceiver_heads * PERCEIVER_DIM_HEAD
    if e != c:  # the PlusV2 shortcut adds ID tokens (width e) to perceiver output (width c)
        raise ValueError(f"embed_dims ({e}) must equal the UNet cross_attention_dim ({c})")
    hidden = cfg.id_embed_dim * 2  # FaceID-Plus MLP: id -> 2*id -> tokens*cross_dim
    sd = {
        "proj.0.weight": (hidden, cfg.id_embed_dim), "proj.0.bias": (hidden,),
        "proj.2.weight": (e * cfg.num_tokens, hidden), "proj.2.bias": (e * cfg.num_tokens,),
        "norm.weight": (e,), "norm.bias": (e,),
        "perceiver_resampler.proj_in.weight": (e, cfg.clip_hidden_dim),
        "perceiver_resampler.proj_in.bias": (e,),
        "perceiver_resampler.proj_out.weight": (c, e), "perceiver_resampler.proj_out.bias": (c,),
        "perceiver_resampler.norm_out.weight": (c,), "perceiver_resampler.norm_out.bias": (c,),
    }
    for i in range(PERCEIVER_DEPTH):
        p = f"perceiver_resampler.layers.{i}."
        sd.update({
            p + "0.norm1.weight": (e,), p + "0.norm1.bias": (e,),
            p + "0.norm2.weight": (e,), p + "0.norm2.bias": (e,),
            p + "0.to_q.weight": (inner, e), p + "0.to_kv.weight": (2 * inner, e),
            p + "0.to_out.weight": (e, inner),
            p + "1.0.weight": (e,), p + "1.0.bias": (e,),
            p + "1.1.weight": (4 * e, e), p + "1.3.weight": (e, 4 * e),
        })
    return {k: torch.zeros(shape) for k, shape in sd.items()}


def ip_attn_template(unet) -> dict[str, torch.Tensor]:
    """Original `ip_adapter` keys: `{index}.to_k_ip.weight` for every cross-attention layer,
    index = position in `unet.attn_processors` (odd numbers: attn2 layers)."""
    sd = {}
    for index, (name, module) in enumerate(_attention_modules(unet)):
        if name.endswith("attn2"):
            sd[f"{index}.to_k_ip.weight"] = module.to_k.weight.detach().clone()
            sd[f"{index}.to_v_ip.weight"] = module.to_v.weight.detach().clone()
    return sd


def _attention_modules(unet):
    names = [k[: -len(".processor")] for k in unet.attn_processors]
    modules = dict(unet.named_modules())
    return [(n, modules[n]) for n in names]


def install_identity_channel(pipe, cfg: AdapterConfig) -> None:
    """Install a freshly initialised projection + IP attention processors into `pipe.unet`
    through diffusers' IP-Adapter loader (fed the zero template, then initialised)."""
    unet = pipe.unet
    template = {"image_proj": image_proj_template(cfg, unet.config.cross_attention_dim),
                "ip_adapter": ip_attn_template(unet)}
    # image_encoder_folder=None: fmu attaches its own CLIP image encoder (load.load_base);
    # low_cpu_mem_usage=False: real modules, initialised in the order fresh adapters always were
    pipe.load_ip_adapter(template, subfolder=None, weight_name=None, image_encoder_folder=None,
                         low_cpu_mem_usage=False)
    for module in image_projection(unet).modules():
        if isinstance(module, (nn.Linear, nn.LayerNorm)):
            module.reset_parameters()


def image_projection(unet):
    return unet.encoder_hid_proj.image_projection_layers[0]


def _ip_processors(unet) -> nn.ModuleDict:
    return nn.ModuleDict({k.replace(".", "__"): v for k, v in unet.attn_processors.items()
                          if hasattr(v, "to_k_ip")})


def ip_attention_state(unet) -> dict[str, torch.Tensor]:
    return _ip_processors(unet).state_dict()


def load_ip_attention_state(unet, sd: dict[str, torch.Tensor]) -> None:
    _ip_processors(unet).load_state_dict(sd, strict=True)


def new_shading_net(unet):
    """ShadingNet = a ControlNet copied from the plain UNet; its cross-attention will see ID tokens."""
    return ControlNetModel.from_unet(unet, conditioning_channels=3)


def shading_net_from_state(shading_config: dict, state: dict[str, torch.Tensor]):
    net = ControlNetModel.from_config(shading_config)
    net.load_state_dict(state, strict=True)
    return net


def pack_adapter(cfg: AdapterConfig, parts: dict[str, dict], shading_config: dict | None = None,
                 extra_meta: dict | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of an fmu adapter file from its parts' state dicts, keyed by part:
    `image_proj`, `ip_attn`, `lora`, `shading` (with `shading_config`)."""
    tensors = {f"{part}.{k}": v.detach().contiguous().cpu() for part, sd in parts.items() for k, v in sd.items()}
    meta = {"format": FORMAT, "config": json.dumps(asdict(cfg))}
    if shading_config is not None:
        meta["shading_config"] = json.dumps(dict(shading_config))
    meta.update({k: json.dumps(v) for k, v in (extra_meta or {}).items()})
    return tensors, meta


def adapter_state(unet, cfg: AdapterConfig, shading_net=None, extra_meta: dict | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of the adapter installed in `unet` (+ its ShadingNet)."""
    parts = {"image_proj": image_projection(unet).state_dict(), "ip_attn": ip_attention_state(unet)}
    if L.has_lora(unet, L.ID_ADAPTER):  # h94's FaceID-PlusV2 without its LoRA file has none
        parts["lora"] = L.lora_state(unet, L.ID_ADAPTER)
    if shading_net is not None:
        parts["shading"] = shading_net.state_dict()
    return pack_adapter(cfg, parts, dict(shading_net.config) if shading_net is not None else None, extra_meta)


def load_adapter_state(unet, tensors: dict[str, torch.Tensor], shading_net=None) -> None:
    """Load an adapter file's tensors into the adapter installed in `unet` (and `shading_net`),
    every part strictly; the identity LoRA when the file has one."""
    image_projection(unet).load_state_dict(split(tensors, "image_proj"), strict=True)
    load_ip_attention_state(unet, split(tensors, "ip_attn"))
    lora = split(tensors, "lora")
    if lora:
        L.load_lora_state(unet, lora, L.ID_ADAPTER)
    if shading_net is not None:
        shading_net.load_state_dict(split(tensors, "shading"), strict=True)


def write_adapter(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write an adapter file atomically: `path` itself (.safetensors) or `path/adapter.safetensors`."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / ADAPTER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


def read_adapter(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    return read_fmu_file(path, FORMAT, "adapter")


def split(tensors: dict, prefix: str) -> dict:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}
