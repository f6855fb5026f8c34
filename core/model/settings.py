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
    id_lora_scale: float = 1.0        # weight of the identity LoRA (fmu_id); --lora-scale is the finetune LoRA's
    width: int = 512
    height: int = 512
    eta: float | None = None          # stochasticity of DDIM / TCD steps; None: the sampler's usual
                                      # (DDIM 0, TCD 0.3)


DEFAULTS = Settings()

# the samplers `core.model.load.make_scheduler` builds (DDIM: the authors' choice); lcm, tcd and
# ddim-trailing are the few-step LoRAs' samplers (LCM-LoRA, TCD-LoRA, Hyper-SD)
SCHEDULERS = ("ddim", "dpm++", "euler", "lcm", "tcd", "ddim-trailing")
# TCD's usual eta (its authors' default; DDIM's is 0: deterministic)
TCD_ETA = 0.3
# weight precisions; auto: fp16 on an accelerator, fp32 on CPU (core.model.load.resolve_dtype)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

# the authors' demo puts "best quality " before every prompt that does not already start with it
PROMPT_PREFIX = "best quality"


def with_prefix(prompt: str, prefix: str | None = PROMPT_PREFIX) -> str:
    if not prefix or prompt.startswith(prefix):
        return prompt
    return f"{prefix} {prompt}"
