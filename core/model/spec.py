"""Which model a run loads: `resolve_model(preset, base_model, adapter)` -> `ModelSpec`, the one
place where `--preset` / `--base-model` / `--adapter` (`--init-adapter` in training) become a base
and an adapter. `fmu generate`, `fmu train` / `finetune` and their preflights all call it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError


@dataclass(frozen=True)
class ModelSpec:
    base: str | Path                  # diffusers folder, hub id in the cache, or single file
    adapter: str | Path | None        # as given, or the preset's; None: a fresh adapter (training from scratch)
    size: int = 512                   # default image side
    identity: dict = field(default_factory=dict)  # what run.json records: {"preset": version} or {"base_model": ...}


def resolve_model(preset: str | None, base_model: str | None, adapter: str | Path | None, *,
                  adapter_flag: str | None = "--adapter") -> ModelSpec:
    """`base_model` (+ `adapter`) wins over `preset`; a preset's own adapter fills an open `adapter`.
    `adapter_flag`: the option that names the adapter, which a base model then needs (None: the
    adapter may stay open, a fresh one is trained)."""
    if base_model:
        if adapter is None and adapter_flag is not None:
            raise UsageError(f"--base-model needs {adapter_flag} (an fmu adapter checkpoint)")
        return ModelSpec(base_model, adapter, 512, {"base_model": base_model})
    if not preset:
        with_adapter = f" with {adapter_flag}" if adapter_flag is not None else ""
        raise UsageError(f"give --preset or --base-model{with_adapter}")
    # deferred: imports torch (a preset may still need building); options are checked before any model library loads
    from .presets import SPECS, ensure_preset

    base, preset_adapter = ensure_preset(preset)
    version, size = SPECS[preset][:2]
    return ModelSpec(base, adapter or preset_adapter, size, {"preset": version})
