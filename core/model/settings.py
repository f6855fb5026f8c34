"""Generation settings: plain values, importable without torch (planning large manifests)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    steps: int = 50
    guidance_scale: float = 7.5
    id_scale: float = 0.5
    s_scale: float = 0.7
    shading_scale: float = 0.5
    lora_scale: float = 1.0
    width: int = 512
    height: int = 512

    def key(self) -> tuple:
        return (self.steps, self.guidance_scale, self.id_scale, self.s_scale, self.shading_scale,
                self.lora_scale, self.width, self.height)


# the authors' demo puts "best quality " before every prompt that does not already start with it
PROMPT_PREFIX = "best quality"


def with_prefix(prompt: str, prefix: str | None = PROMPT_PREFIX) -> str:
    if not prefix or prompt.startswith(prefix):
        return prompt
    return f"{prefix} {prompt}"
