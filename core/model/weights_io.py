"""Reading weight files without running anything that is in them.

Two ways in, nothing else: safetensors (plain tensors by construction) and pickles read with
`torch.load(weights_only=True)`, whose unpickler only rebuilds tensors and plain containers and
refuses every other global *before* calling it — so a file carrying a code payload is rejected
and the payload never runs. Every failure is a `UsageError` naming the file and what to do.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

from safetensors import safe_open

from ..errors import UsageError, first_line

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")
SINGLE_FILE_SUFFIXES = (".safetensors",) + PICKLE_SUFFIXES  # a whole SD1.5 checkpoint in one file
ADAPTER_FORMAT = "fmu-adapter/1"  # an fmu adapter file's `format` metadata (core/model/adapter.py)


def is_single_file(base: str | Path) -> bool:
    """Is the base model one checkpoint file (not a diffusers folder or a hub id)?"""
    path = Path(str(base))
    return path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES


def looks_like_safetensors(path: Path) -> bool:
    """safetensors = 8-byte little-endian header length, then a JSON header starting with '{'."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + n <= size


def read_state(path: str | Path) -> dict:
    """The file's contents: a flat {name: tensor} dict (safetensors) or whatever tensor-only
    structure the pickle holds (usually nested dicts of tensors)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if path.suffix == ".safetensors" or looks_like_safetensors(path):
        return _read_safetensors(path)
    return _read_pickle(path)


def read_safetensors_metadata(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="numpy") as fh:  # a header read: numpy, not torch
            return fh.metadata() or {}
    except Exception as exc:  # noqa: BLE001  SafetensorError is not exported under a stable name
        raise UsageError(f"{path} is not a readable safetensors file (corrupted or truncated?): "
                         f"{first_line(exc)}") from None


def _read_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file  # deferred: heavy (torch); lora and doctor read headers without it

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001  as above: SafetensorError has no stable import name
        raise UsageError(f"{path} is not a readable safetensors file (corrupted or truncated?): "
                         f"{first_line(exc)}") from None


def _read_pickle(path: Path):
    import torch  # deferred: heavy (torch), as above

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" in str(exc).lower():  # a class/function reference: objects or code
            raise UsageError(
                f"{path} refused: besides tensors it holds Python objects or code "
                f"({_unsafe_detail(exc)}); fmu loads pickles only with torch.load(weights_only=True) "
                "and nothing in the file was executed. If you trust its origin, re-save its tensors "
                "as safetensors.") from None
        raise UsageError(f"{path} is not a readable weights file (corrupted, truncated or not a "
                         f"PyTorch/safetensors file): {first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001  junk bytes fail in many ways (KeyError on a bad magic, ...)
        raise UsageError(f"{path} is not a readable weights file (corrupted, truncated or not a "
                         f"PyTorch/safetensors file): {first_line(exc)}") from None


def _unsafe_detail(exc: Exception) -> str:
    for line in str(exc).splitlines():
        if "unsupported global" in line.lower():
            return line.strip().removeprefix("WeightsUnpickler error: ")
    return first_line(exc)


def fmu_file_meta(path: Path, expected_format: str, what: str) -> dict:
    """Metadata of an fmu safetensors file whose `format` tag is `expected_format`, read from
    its header alone (UsageError for a missing, unreadable or foreign file)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file")
    meta = read_safetensors_metadata(path)
    if meta.get("format") != expected_format:
        raise UsageError(f"{path} is not an fmu {what} (format={meta.get('format')!r})")
    return meta


def read_fmu_file(path: Path, expected_format: str, what: str) -> tuple[dict, dict]:
    """Tensors and metadata of an fmu safetensors file, checking its `format` tag first."""
    meta = fmu_file_meta(path, expected_format, what)
    return read_state(path), meta
