"""Foreign adapter checkpoints -> fmu's adapter format (in memory, or written by `fmu convert`).

Accepted inputs (`load_adapter_any`):

- fmu adapters (`adapter.safetensors`, metadata format "fmu-adapter/1"): returned as they are.
- The IP-Adapter training layout, as a pickle (`model.bin`, `{"image_proj": {...},
  "ip_adapter": {...}}`) or flat safetensors (`image_proj.*`, `ip_adapter.*`). This is the
  layout of h94's IP-Adapter-FaceID-PlusV2 files and of the Face-MakeUpV2 authors' `model.bin`:
  - `image_proj`: FaceID-Plus projection (`proj.0/2`, `norm`, `perceiver_resampler.*`);
  - `ip_adapter`: `{index}.to_k_ip.weight` / `{index}.to_v_ip.weight`, index = position in
    `unet.attn_processors` (cross-attention layers only), and optionally LoRA in the original
    IP-Adapter-FaceID `LoRAAttnProcessor` naming, `{index}.to_q_lora.down.weight` / `.up.weight`
    (same for to_k / to_v / to_out) on every attention processor, scale 1.
  - ShadingNet: a top-level `controlnet` dict in the same pickle, holding the state dict of
    `ControlNetModel.from_unet(unet)` in diffusers naming. That is what the authors' loader
    reads: their web demo builds `ControlNetModel.from_unet(unet)` and calls
    `FaceMakeUpPipeline.load_controlnet(model.bin)`, which does
    `controlnet.load_state_dict(torch.load(path)["controlnet"])` on the same file that
    `load_ip_adapter` reads `image_proj` / `ip_adapter` from. (Their checkpoint itself was not
    available here to open.) In safetensors: `controlnet.*` keys.
- A separate LoRA file (`lora=`, e.g. h94's `ip-adapter-faceid-plusv2_sd15_lora.safetensors`):
  kohya (`lora_unet_*.lora_down.weight` + `.alpha`), old diffusers or peft naming — normalised
  by diffusers' own `lora_state_dict`; each module's alpha/rank is folded into its up matrix,
  since fmu's LoRA runs at alpha = rank (scale 1).

The mapping needs only the UNet's structure (layer order, names, shapes), never its weights: a
skeleton is built on the meta device from the UNet config. The image projection goes through
diffusers' own FaceID-Plus converter, so the converted tensors are the ones diffusers' IP-Adapter
loader would put in the model. Every tensor is checked against the skeleton's shapes; a file
made for another UNet, or with another layout, is refused with what did not fit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.utils import convert_unet_state_dict_to_peft

from ..errors import UsageError
from . import adapter as A
from .lora import LORA_TARGETS
from .weights_io import read_safetensors_metadata, read_state

CONTROLNET_KEYS = ("controlnet",)

# The UNet of every SD1.5 checkpoint (runwayml / stable-diffusion-v1-5 unet/config.json):
# used when converting without --base.
SD15_UNET_CONFIG = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
    "attention_head_dim": 8, "norm_num_groups": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                         "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}


# ---------------------------------------------------------------- UNet structure

def unet_skeleton(unet_config: dict):
    """A UNet with the config's structure and no storage (meta tensors): names, order, shapes."""
    config = {k: v for k, v in dict(unet_config).items() if not k.startswith("_")}
    config.pop("encoder_hid_dim_type", None)  # a UNet that already carries an IP-Adapter
    config.pop("encoder_hid_dim", None)
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(config)


def shading_skeleton(unet):
    with torch.device("meta"):
        return ControlNetModel.from_unet(unet, conditioning_channels=3, load_weights_from_unet=False)


def lora_targets(unet) -> dict[str, tuple[int, int]]:
    """{module name: (out_features, in_features)} for every Linear fmu puts LoRA on."""
    pattern = re.compile(LORA_TARGETS)
    return {name: (m.out_features, m.in_features) for name, m in unet.named_modules()
            if pattern.fullmatch(name) and isinstance(m, torch.nn.Linear)}


# ---------------------------------------------------------------- reading any adapter

def load_adapter_any(path: str | Path, unet_config: dict | None = None,
                     lora: str | Path | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) in fmu's adapter format from any supported file.

    `unet_config`: the base UNet's config (SD1.5's when None); `lora`: a separate LoRA file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"adapter {path}: no such file")
    if path.suffix == ".safetensors":
        meta = read_safetensors_metadata(path)
        if meta.get("format") == A.FORMAT:
            if lora is not None:
                raise UsageError(f"{path} is an fmu adapter, which carries its own LoRA; "
                                 "--lora is for IP-Adapter / authors' checkpoints")
            tensors = read_state(path)
            return tensors, meta
        if meta.get("format", "").startswith("fmu-adapter"):
            raise UsageError(f"{path} is an fmu adapter of format {meta['format']!r}; this fmu reads {A.FORMAT!r}")
    state = read_state(path)
    original, controlnet = split_original_layout(state, path)
    lora_state = read_state(lora) if lora is not None else None
    try:
        return convert_original(original, controlnet, unet_config or SD15_UNET_CONFIG,
                                lora_file=lora_state, source={"file": path.name,
                                                              "lora": Path(lora).name if lora else None})
    except ValueError as exc:
        raise UsageError(f"cannot use {path}{f' with {lora}' if lora else ''}: {exc}") from None


def split_original_layout(state, path: Path) -> tuple[dict, dict | None]:
    """({'image_proj': ..., 'ip_adapter': ...}, controlnet state dict or None) from a pickle's
    nested dicts or a flat safetensors dict; UsageError for any other layout."""
    if not isinstance(state, dict):
        raise UsageError(f"{path} holds a {type(state).__name__}, not a state dict")
    if any(isinstance(v, dict) for v in state.values()):
        nested = {k: v for k, v in state.items() if isinstance(v, dict)}
    else:  # flat: 'image_proj.proj.0.weight', 'ip_adapter.1.to_k_ip.weight', 'controlnet.…'
        nested = {}
        for key, value in state.items():
            head, _, rest = str(key).partition(".")
            nested.setdefault(head, {})[rest] = value
    if "image_proj" not in nested or "ip_adapter" not in nested:
        found = ", ".join(sorted(map(str, nested or state))[:6]) or "nothing"
        raise UsageError(
            f"{path} is neither an fmu adapter nor an IP-Adapter checkpoint: expected 'image_proj' and "
            f"'ip_adapter' entries (IP-Adapter training layout), found {found}")
    for part in ("image_proj", "ip_adapter"):
        bad = [k for k, v in nested[part].items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise UsageError(f"{path}: '{part}' holds non-tensor entries ({bad[:3]})")
    controlnet = next((nested[k] for k in CONTROLNET_KEYS if k in nested), None)
    return {"image_proj": nested["image_proj"], "ip_adapter": nested["ip_adapter"]}, controlnet


# ---------------------------------------------------------------- conversion

def infer_adapter_config(image_proj: dict, lora_rank: int | None, shading: bool) -> A.AdapterConfig:
    need = ("proj.0.weight", "proj.2.weight", "norm.weight", "perceiver_resampler.proj_in.weight",
            "perceiver_resampler.layers.0.0.to_q.weight")
    missing = [k for k in need if k not in image_proj]
    if missing:
        kind = "FaceID (without Plus)" if "proj.0.weight" in image_proj else "not a FaceID-Plus projection"
        raise ValueError(f"image_proj is {kind}: missing {', '.join(missing)}; fmu needs an "
                         "IP-Adapter-FaceID-Plus(V2) projection")
    embed = image_proj["norm.weight"].shape[0]
    return A.AdapterConfig(
        id_embed_dim=image_proj["proj.0.weight"].shape[1],
        clip_hidden_dim=image_proj["perceiver_resampler.proj_in.weight"].shape[1],
        embed_dims=embed,
        perceiver_heads=image_proj["perceiver_resampler.layers.0.0.to_q.weight"].shape[0] // A.PERCEIVER_DIM_HEAD,
        num_tokens=image_proj["proj.2.weight"].shape[0] // embed,
        lora_rank=lora_rank or A.AdapterConfig.lora_rank,
        shading=shading)


def _check_shapes(what: str, got: dict, want: dict) -> None:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = [f"{k} {tuple(got[k].shape)} != {tuple(want[k])}" for k in sorted(set(got) & set(want))
             if tuple(got[k].shape) != tuple(want[k])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if extra:
        problems.append(f"{len(extra)} unexpected (e.g. {', '.join(extra[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} with other shapes (e.g. {'; '.join(wrong[:3])})")
    if problems:
        raise ValueError(f"{what} does not fit this UNet: " + ", ".join(problems))


def convert_image_proj(image_proj: dict, cfg: A.AdapterConfig, cross_attention_dim: int) -> dict:
    """Original FaceID-Plus keys -> diffusers' `IPAdapterFaceIDPlusImageProjection` state dict,
    through diffusers' own converter (it uses nothing of the UNet but device and dtype)."""
    template = A.image_proj_template(cfg, cross_attention_dim)
    _check_shapes("image_proj", image_proj, {k: v.shape for k, v in template.items()})
    # private, but the one step needed: the public `load_ip_adapter` converts only while loading
    # into a pipeline with a materialised UNet, and conversion here needs none (meta skeleton)
    stub = SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32)
    module = UNet2DConditionModel._convert_ip_adapter_image_proj_to_diffusers(
        stub, {k: v.float() for k, v in image_proj.items()}, low_cpu_mem_usage=False)
    return module.state_dict()


def convert_ip_attention(ip_adapter: dict, skeleton) -> dict:
    """`{index}.to_k_ip.weight` -> fmu's `ip_attn` keys (processor name, '.' -> '__')."""
    modules = dict(skeleton.named_modules())
    got, want, out = {}, {}, {}
    for index, name in enumerate(skeleton.attn_processors):
        if not name.endswith("attn2.processor"):
            continue
        attn = modules[name[: -len(".processor")]]
        safe = name.replace(".", "__")
        for kind in ("k", "v"):
            src = f"{index}.to_{kind}_ip.weight"
            want[src] = getattr(attn, f"to_{kind}").weight.shape
            if src in ip_adapter:
                got[src] = ip_adapter[src]
                out[f"{safe}.to_{kind}_ip.0.weight"] = ip_adapter[src]
    strays = [k for k in ip_adapter if "_ip." in k and k not in want]
    got.update({k: ip_adapter[k] for k in strays})
    _check_shapes("ip_adapter (to_k_ip / to_v_ip)", got, want)
    others = [k for k in ip_adapter if "_ip." not in k and "_lora." not in k]
    if others:
        raise ValueError(f"ip_adapter has entries that are neither IP projections nor LoRA: {others[:3]}")
    return out


def _peft_lora(diffusers_lora: dict, alphas: dict | None) -> dict:
    """diffusers' attention-processor LoRA naming (`unet.<proc>.to_q_lora.down.weight`) or peft
    naming -> peft keys without the `unet.` prefix, alpha/rank folded into lora_B."""
    text = [k for k in diffusers_lora if not k.startswith("unet.")]
    if text:
        raise ValueError(f"the LoRA touches more than the UNet ({text[:2]}): fmu's LoRA is UNet-only")
    scaled = dict(diffusers_lora)
    for key, alpha in (alphas or {}).items():
        down = key[: -len(".alpha")] if key.endswith(".alpha") else key
        up = down.replace(".down.", ".up.").replace("lora_A", "lora_B")
        if down in scaled and up in scaled:
            rank = scaled[down].shape[0]
            scaled[up] = scaled[up] * (float(alpha) / rank)
    peft = convert_unet_state_dict_to_peft(scaled)
    return {k[len("unet."):] if k.startswith("unet.") else k: v for k, v in peft.items()}


def convert_lora(peft_lora: dict, skeleton) -> tuple[dict, int]:
    """Peft LoRA keys -> fmu's `lora` state: every fmu target present (zeros where the source
    has none), ranks zero-padded to the largest one (the product up @ down is unchanged)."""
    targets = lora_targets(skeleton)
    modules = {}
    for key, value in peft_lora.items():
        match = re.fullmatch(r"(.+)\.lora_([AB])\.weight", key)
        if match is None:
            raise ValueError(f"unrecognised LoRA entry {key!r}")
        modules.setdefault(match.group(1), {})[match.group(2)] = value
    outside = sorted(set(modules) - set(targets))
    if outside:
        raise ValueError(f"LoRA on {len(outside)} layer(s) fmu does not adapt or this UNet lacks "
                         f"(e.g. {', '.join(outside[:3])})")
    rank = max((m["A"].shape[0] for m in modules.values() if "A" in m), default=0)
    out = {}
    for name, (n_out, n_in) in targets.items():
        pair = modules.get(name, {})
        if len(pair) == 1:
            raise ValueError(f"LoRA for {name} has only its {'down' if 'A' in pair else 'up'} matrix")
        down = pair.get("A", torch.zeros(rank, n_in))
        up = pair.get("B", torch.zeros(n_out, rank))
        r = down.shape[0]
        if down.shape[1] != n_in or up.shape != (n_out, r):
            raise ValueError(f"LoRA for {name} does not fit this UNet: down {tuple(down.shape)}, up {tuple(up.shape)}; "
                             f"the layer is {n_in} -> {n_out}")
        out[f"{name}.lora_A.weight"] = torch.cat([down, down.new_zeros(rank - r, n_in)])
        out[f"{name}.lora_B.weight"] = torch.cat([up, up.new_zeros(n_out, rank - r)], dim=1)
    return out, rank


def lora_from_ip_adapter(ip_adapter: dict, skeleton) -> dict:
    """The FaceID LoRAAttnProcessor weights inside `ip_adapter`, via diffusers' own extraction."""
    if not any("_lora." in k for k in ip_adapter):
        return {}
    # private, for the reason of convert_image_proj: `load_ip_adapter` does this only while loading
    extracted = skeleton._load_ip_adapter_loras([{"ip_adapter": ip_adapter}])
    found = extracted.get(0, {})
    n_src = sum("_lora." in k for k in ip_adapter)
    if len(found) != n_src:
        raise ValueError(f"ip_adapter holds {n_src} LoRA tensors, {len(found)} of them at indices of this "
                         "UNet's attention processors (a file for another UNet, or partial LoRA)")
    return _peft_lora(found, None)


def lora_from_file(state) -> dict:
    """A LoRA file's dict (kohya / diffusers / peft naming) -> peft keys, alphas folded."""
    # deferred: the pipeline class loads transformers' image processors (which warn without
    # torchvision); only a LoRA file needs its loader
    from diffusers import StableDiffusionPipeline

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("the LoRA file is not a flat {name: tensor} dict")
    try:
        normalised, alphas = StableDiffusionPipeline.lora_state_dict(dict(state))
    except (ValueError, KeyError) as exc:
        raise ValueError(f"not a LoRA file diffusers recognises: {exc}") from None
    return _peft_lora(normalised, alphas)


def convert_original(original: dict, controlnet: dict | None, unet_config: dict,
                     lora_file: dict | None = None, source: dict | None = None
                     ) -> tuple[dict[str, torch.Tensor], dict]:
    """IP-Adapter training layout (+ optional ControlNet, LoRA file) -> fmu (tensors, metadata)."""
    skeleton = unet_skeleton(unet_config)
    cross = skeleton.config.cross_attention_dim
    lora = lora_from_ip_adapter(original["ip_adapter"], skeleton)
    if lora_file is not None:
        if lora:
            raise ValueError("LoRA given twice: inside ip_adapter and as a separate file")
        lora = lora_from_file(lora_file)
    lora_state, rank = convert_lora(lora, skeleton) if lora else ({}, None)
    cfg = infer_adapter_config(original["image_proj"], rank, shading=controlnet is not None)
    # a checkpoint with a ShadingNet is the authors' Face-MakeUpV2: their CLIP face image is the
    # wide crop; h94's FaceID-PlusV2 (no ShadingNet) uses the aligned one. An authors' file
    # stripped of its ShadingNet cannot be told from h94's: `fmu generate --face-crop wide`.
    cfg.face_crop = "wide" if controlnet is not None else "aligned"

    parts = {"image_proj": convert_image_proj(original["image_proj"], cfg, cross),
             "ip_attn": convert_ip_attention(original["ip_adapter"], skeleton), "lora": lora_state}
    shading_config = None
    if controlnet is not None:
        net = shading_skeleton(skeleton)
        _check_shapes("controlnet (ShadingNet)", controlnet, {k: v.shape for k, v in net.state_dict().items()})
        parts["shading"], shading_config = controlnet, dict(net.config)
    tensors, meta = A.pack_adapter(cfg, parts, shading_config,
                                   {"converted_from": {"layout": "ip-adapter", **(source or {})}})
    return {k: v.float().contiguous() for k, v in tensors.items()}, meta


# ---------------------------------------------------------------- fmu convert

def base_unet_config(base: str | Path | None, offline: bool = True, base_config: str | Path | None = None) -> dict:
    """The UNet config of a base model (diffusers folder, hub id, or a single file's config
    folder); SD1.5's when no base is given."""
    source = base_config or base
    if source is None or (base_config is None and Path(str(base)).is_file()):
        return dict(SD15_UNET_CONFIG)
    try:
        return dict(UNet2DConditionModel.load_config(str(source), subfolder="unet", local_files_only=offline))
    except (OSError, ValueError) as exc:
        raise UsageError(f"no UNet config at {source} (a diffusers folder or a hub id in the local "
                         f"cache): {str(exc).splitlines()[0]}") from None


def convert_file(src: str | Path, out: str | Path, lora: str | Path | None = None,
                 base: str | Path | None = None, base_config: str | Path | None = None,
                 offline: bool = True) -> dict:
    """Write `src` (+ `lora`) as an fmu adapter; returns a summary for the CLI."""
    tensors, meta = load_adapter_any(src, base_unet_config(base, offline, base_config), lora)
    try:
        path = A.write_adapter(Path(out), tensors, meta)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write the adapter there ({exc.strerror or exc})") from None
    cfg = json.loads(meta["config"])
    parts = {p: sum(1 for k in tensors if k.startswith(p + ".")) for p in ("image_proj", "ip_attn", "lora", "shading")}
    return {"path": path, "config": cfg, "tensors": parts,
            "parameters": sum(v.numel() for v in tensors.values()), "shading": "shading_config" in meta}
