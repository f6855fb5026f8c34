"""Checkpoints: `accelerator.save_state` + the data position + this rank's training RNG.

Layout: `OUT/checkpoints/checkpoint-00000020/` holding accelerate's optimizer, LR scheduler and
RNG files, the trainable weights (`adapter.safetensors` in full mode, `lora.safetensors` in
LoRA mode — written by the save hook instead of a whole-UNet copy), one `trainer_state_<rank>.pt`
per rank and a `COMPLETE` marker written last, so a checkpoint cut short by a crash is ignored.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

PREFIX = "checkpoint-"
MARKER = "COMPLETE"


def checkpoint_root(out: Path) -> Path:
    return Path(out) / "checkpoints"


def list_checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(out)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / MARKER).exists()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def resolve_resume(out: Path, resume: str | None) -> Path | None:
    """`latest` -> the newest complete checkpoint of this run (None when there is none yet)."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(out)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / MARKER).exists():
        from core.errors import UsageError

        raise UsageError(f"{path} is not a complete fmu checkpoint")
    return path


def save_checkpoint(accelerator, out: Path, step: int, position: int, generator: torch.Generator,
                    keep: int) -> Path:
    """Collective: every rank calls it. Returns the checkpoint folder."""
    path = checkpoint_root(out) / f"{PREFIX}{step:08d}"
    accelerator.save_state(str(path))
    torch.save({"step": step, "position": position, "generator": generator.get_state()},
               path / f"trainer_state_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (path / MARKER).write_text(json.dumps({"step": step, "position": position,
                                               "world_size": accelerator.num_processes}))
        for old in list_checkpoints(out)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def load_checkpoint(accelerator, path: Path, generator: torch.Generator) -> tuple[int, int]:
    """Restore everything `save_checkpoint` wrote; returns (step, data position)."""
    from core.errors import UsageError

    info = json.loads((Path(path) / MARKER).read_text())
    if info.get("world_size", 1) != accelerator.num_processes:
        raise UsageError(f"{path} was written by {info['world_size']} process(es); resuming with "
                         f"{accelerator.num_processes} would change the data order")
    accelerator.load_state(str(path))
    state = torch.load(Path(path) / f"trainer_state_{accelerator.process_index}.pt", weights_only=True)
    generator.set_state(state["generator"])
    return int(state["step"]), int(state["position"])
