"""The identity channel's weights: FaceID-PlusV2 projection, IP attention, LoRA, ShadingNet.

Structure comes from diffusers' own IP-Adapter loader (`unet._load_ip_adapter_weights`), fed a
state dict in the original IP-Adapter training layout (`image_proj`, `ip_adapter`) — the layout
of the authors' `model.bin` and of h94's files, so those load through the same call. A fresh
adapter is built from a zero template of that layout and then initialised the IP-Adapter way
(image projection: default init; to_k_ip/to_v_ip: copies of the UNet's to_k/to_v).

fmu's own checkpoint (`adapter.safetensors`) stores the modules' diffusers-layout weights under
`image_proj.`, `ip_attn.`, `lora.` and `shading.` with the sizes in the metadata, so loading
rebuilds the structure from the template and then loads every tensor strictly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

FORMAT = "fmu-adapter/1"
PERCEIVER_DEPTH = 4        # fixed by diffusers' FaceID-Plus loader
PERCEIVER_DIM_HEAD = 64    # idem: heads = to_q.out_features // 64
LORA_TARGETS = r".*(down_blocks|mid_block|up_blocks)\..*attn[12]\.(to_q|to_k|to_v|to_out\.0)"


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
    def from_dict(cls, d: dict) -> "AdapterConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


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


def install_identity_channel(unet, cfg: AdapterConfig, original: dict | None = None) -> None:
    """Install projection + IP attention processors through diffusers' loader.

    `original` is a state dict in the IP-Adapter training layout ({'image_proj', 'ip_adapter'});
    without it a freshly initialised adapter is installed."""
    fresh = original is None
    if fresh:
        original = {"image_proj": image_proj_template(cfg, unet.config.cross_attention_dim),
                    "ip_adapter": ip_attn_template(unet)}
    unet._load_ip_adapter_weights([original], low_cpu_mem_usage=False)
    if fresh:
        proj = image_projection(unet)
        for module in proj.modules():
            if isinstance(module, (nn.Linear, nn.LayerNorm)):
                module.reset_parameters()


def image_projection(unet):
    return unet.encoder_hid_proj.image_projection_layers[0]


def ip_attention_state(unet) -> dict[str, torch.Tensor]:
    procs = nn.ModuleDict({k.replace(".", "__"): v for k, v in unet.attn_processors.items()
                           if hasattr(v, "to_k_ip")})
    return procs.state_dict()


def load_ip_attention_state(unet, sd: dict[str, torch.Tensor]) -> None:
    procs = nn.ModuleDict({k.replace(".", "__"): v for k, v in unet.attn_processors.items()
                           if hasattr(v, "to_k_ip")})
    procs.load_state_dict(sd, strict=True)


def add_lora(unet, rank: int) -> None:
    from peft import LoraConfig

    # UNet attention only: the perceiver inside the projection has to_q/to_k too.
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=LORA_TARGETS),
                     adapter_name="fmu_id")


def lora_state(unet) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(unet, adapter_name="fmu_id")


def load_lora_state(unet, sd: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(unet, sd, adapter_name="fmu_id")
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"LoRA weights do not fit this UNet: {unexpected[:3]} ...")


def _prefixed(prefix: str, sd: dict) -> dict:
    return {f"{prefix}.{k}": v.detach().contiguous().cpu() for k, v in sd.items()}


def save_adapter(path: Path, unet, cfg: AdapterConfig, shading_net=None, extra_meta: dict | None = None) -> None:
    from safetensors.torch import save

    from ..images import atomic_write_bytes

    tensors = {}
    tensors.update(_prefixed("image_proj", image_projection(unet).state_dict()))
    tensors.update(_prefixed("ip_attn", ip_attention_state(unet)))
    tensors.update(_prefixed("lora", lora_state(unet)))
    meta = {"format": FORMAT, "config": json.dumps(asdict(cfg))}
    if shading_net is not None:
        tensors.update(_prefixed("shading", shading_net.state_dict()))
        meta["shading_config"] = json.dumps(dict(shading_net.config))
    meta.update({k: json.dumps(v) for k, v in (extra_meta or {}).items()})
    atomic_write_bytes(path, save(tensors, metadata=meta))


def fmu_file_meta(path: Path, expected_format: str, what: str) -> dict:
    """Metadata of an fmu safetensors file whose `format` tag is `expected_format`, read from
    its header alone (UsageError for a missing, unreadable or foreign file)."""
    from ..errors import UsageError
    from .weights_io import read_safetensors_metadata

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file")
    meta = read_safetensors_metadata(path)
    if meta.get("format") != expected_format:
        raise UsageError(f"{path} is not an fmu {what} (format={meta.get('format')!r})")
    return meta


def read_fmu_file(path: Path, expected_format: str, what: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of an fmu safetensors file, checking its `format` tag first."""
    from .weights_io import read_state

    meta = fmu_file_meta(path, expected_format, what)
    return read_state(path), meta


def read_adapter(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    return read_fmu_file(path, FORMAT, "adapter")


def split(tensors: dict, prefix: str) -> dict:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}
