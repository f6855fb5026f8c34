"""A model folder on this machine from a folder path or a hub id, and a digest of what is in it.

Like the rest of fmu, nothing is downloaded at run time: a hub id resolves only from the Hugging
Face cache (`huggingface-cli download <id>` fills it once).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..digests import file_digest
from ..errors import UsageError, first_line

MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")


def local_model_folder(name: str, what: str) -> Path:
    """The folder `name` names: a local folder, or a hub id's snapshot in the Hugging Face cache.
    UsageError (one line) when it is neither."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UsageError(f"{what} {name}: not a folder")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download  # deferred: heavy (huggingface_hub); only hub ids need it

        try:
            return Path(snapshot_download(name, local_files_only=True))
        except Exception as exc:  # noqa: BLE001  not cached / not a valid id: hub raises several types
            raise UsageError(f"{what} {name!r}: no such folder, and not in the Hugging Face cache (fmu does "
                             f"not download; `huggingface-cli download {name}` once): {first_line(exc, 120)}") from None
    raise UsageError(f"{what} {name}: no such folder")


def folder_identity(folder: Path) -> str:
    """16 hex digits over the names and contents of a model folder's config, vocabulary and
    weight files: a cache key that changes when the model does."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in MODEL_FILE_SUFFIXES):
        digest.update(f"{path.relative_to(folder)}:{file_digest(path)}\n".encode())
    return digest.hexdigest()[:16]
