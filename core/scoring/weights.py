"""Finding a metric's weights on this machine, or saying clearly why it cannot run.

Scoring never downloads: hub models come from a local folder or the Hugging Face cache
(`local_files_only=True`), plain state dicts from a path option or the torch hub cache where
the original packages (lpips, pytorch-fid) would have saved them. A metric whose weights are
absent is reported as unavailable with the reason; the other metrics still run.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError, first_line


class MetricUnavailable(Exception):
    """A metric cannot run here; the message is the one-line reason shown to the user."""


def torch_hub_checkpoints() -> Path:
    """Where torch.hub (and so torchvision, lpips, pytorch-fid) caches downloaded weights."""
    hub = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(hub) / "hub" / "checkpoints"


def first_existing(candidates: list[Path | None]) -> Path | None:
    for path in candidates:
        if path is not None and Path(path).is_file():
            return Path(path)
    return None


def load_state_dict(path: Path) -> dict:
    """safetensors or a pickled state dict, read with weights_only=True (no code execution)."""
    import torch  # deferred: heavy (torch)

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # deferred: with torch

        return load_file(str(path), device="cpu")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def from_pretrained_local(cls, name_or_path: str, what: str, flag: str | None = None, **kwargs):
    """`cls.from_pretrained` restricted to local files; MetricUnavailable when not present, said in
    one short line of fmu's own (the library's message is about reaching the hub, which scoring
    never tries). A folder that exists but does not load keeps the library's first line: that is
    a problem with the folder."""
    try:
        return cls.from_pretrained(str(name_or_path), local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:
        if Path(str(name_or_path)).expanduser().exists():
            raise MetricUnavailable(f"{what} weights at {name_or_path} cannot be loaded: {first_line(exc, 120)}") \
                from None
        hint = f"; pass {flag} DIR" if flag else ""
        raise MetricUnavailable(f"{what} weights not found locally: {name_or_path} is not in the Hugging Face "
                                f"cache (nothing is downloaded){hint}") from None


def check_given_model(name_or_path: str, flag: str) -> None:
    """A model the user named (`--clip-model`, `--dino-model`): a folder with a config.json, or a
    hub id in the local cache. UsageError otherwise: a metric left unavailable because of a typo in
    an option the user gave would go unnoticed in a long report."""
    from huggingface_hub import try_to_load_from_cache  # deferred: heavy

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"{flag} {name_or_path}: no config.json in that folder (a transformers model folder)")
        return
    try:
        cached = isinstance(try_to_load_from_cache(str(name_or_path), "config.json"), str)
    except ValueError:  # neither a folder nor a valid hub id
        cached = False
    if not cached:
        raise UsageError(f"{flag} {name_or_path}: no such folder, and not a hub id in the local Hugging Face cache "
                         "(fmu does not download)")


def check_given_file(path: Path, flag: str, folder: bool = False) -> None:
    path = Path(path).expanduser()
    if folder and not path.is_dir():
        raise UsageError(f"{flag} {path}: no such folder")
    if not folder and not path.is_file():
        raise UsageError(f"{flag} {path}: no such file")
