"""What an image is made with, and the defaults (the authors' demo): plain values, importable
without torch, read by the runner's `GenerateConfig` and through it by the `fmu generate` flags."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    """One image's sampling settings; a manifest row may override steps, guidance_scale,
    id_scale, width and height."""

    steps: int = 50
    guidance_scale: float = 7.5
    id_scale: float = 0.5
    s_scale: float = 0.7
    shading_scale: float = 0.5
    lora_scale: float = 1.0
    width: int = 512
    height: int = 512


DEFAULTS = Settings()

# the samplers `core.model.load.make_scheduler` builds (DDIM: the authors' choice)
SCHEDULERS = ("ddim", "dpm++", "euler")
# weight precisions; auto: fp16 on CUDA, fp32 on CPU (core.model.load.resolve_dtype)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

# the authors' demo puts "best quality " before every prompt that does not already start with it
PROMPT_PREFIX = "best quality"


def with_prefix(prompt: str, prefix: str | None = PROMPT_PREFIX) -> str:
    if not prefix or prompt.startswith(prefix):
        return prompt
    return f"{prefix} {prompt}"
