"""Built-in model presets. `tiny`: every component at toy size, built from configs with a fixed
seed, saved once and loaded back through the same `from_pretrained` path a real model uses.
Its images are noise: it exists to run the whole product offline (demo, tests, CI)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UsageError
from ..home import fmu_home
from .tiny_tokenizer import write_tiny_tokenizer_files

TINY_VERSION = "tiny-v1"
TINY_SIZE = 64  # output side in pixels; latents 8x8, attention maps (64/16)^2 = 4x4

# name -> (version, output size, UNet widths, layers per block, cross-attention width)
# `bench`: mid-size, so that denoising dominates a CPU run and speed ratios mean something.
SPECS = {
    "tiny": (TINY_VERSION, TINY_SIZE, (32, 32, 64), 1, 32),
    "bench": ("bench-v1", 128, (64, 128, 128), 2, 64),
}
PRESETS = tuple(SPECS)


def preset_paths(name: str) -> tuple[Path, Path]:
    root = fmu_home() / "presets" / SPECS[name][0]
    return root / "base", root / "adapter.safetensors"


def ensure_preset(name: str) -> tuple[Path, Path]:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    base, adapter = preset_paths(name)
    if not adapter.exists():
        root = base.parent
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".building-"))
        try:
            build_preset(name, tmp / "base", tmp / "adapter.safetensors")
            try:
                os.rename(tmp, root)  # atomic: concurrent builders race, one wins
            except OSError:
                if not adapter.exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return base, adapter


def build_preset(name: str, base_dir: Path, adapter_path: Path, seed: int = 0) -> None:
    # deferred: heavy (torch, diffusers, transformers, the model package); doctor and preflight import
    # this module for preset_paths / ensure_preset, which need none of it once the preset is built
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    # deferred: these import diffusers, as above
    from .adapter import AdapterConfig
    from .facemakeup import FaceMakeUp

    version, size, widths, layers, cross_dim = SPECS[name]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=size // 8, in_channels=4, out_channels=4, layers_per_block=layers,
        block_out_channels=widths, norm_num_groups=8, cross_attention_dim=cross_dim,
        attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=size, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    tok_dir = base_dir.parent / "tokenizer-src"
    vocab, merges = write_tiny_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cross_dim, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=cross_dim,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=32))
    feature_extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None,
                                   feature_extractor=feature_extractor, image_encoder=image_encoder,
                                   requires_safety_checker=False)
    pipe.save_pretrained(base_dir, safe_serialization=True)
    shutil.rmtree(tok_dir, ignore_errors=True)

    cfg = AdapterConfig(id_embed_dim=128, clip_hidden_dim=32, embed_dims=cross_dim, perceiver_heads=1,
                        lora_rank=4, shading=True)
    FaceMakeUp.from_pipe(pipe, cfg).save_pretrained(adapter_path, extra_meta={"preset": version, "seed": seed})
