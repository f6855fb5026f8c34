"""Stage 1 of the data (text generation): captions for the images that have none.

`--captioner <folder or hub id>` names a transformers image-to-text model (BLIP, a
VisionEncoderDecoder, ...: anything `AutoModelForImageTextToText` loads and `generate`s text from
an image alone). Captions are cached by image content and model identity under
`DATA/cache/captions/`, so a re-run does not caption again. A caption from the manifest or a
sidecar `name.txt` always wins; without a captioner the default caption stays.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from fmu.core.digests import file_digest
from fmu.core.errors import ImageError, UsageError, first_line
from fmu.core.images import atomic_write_bytes, load_rgb
from fmu.core.regions.pretrained import folder_identity, local_model_folder

MAX_NEW_TOKENS = 40
BATCH = 8


class Captioner:
    def __init__(self, source: str, device: str | None = None, max_new_tokens: int = MAX_NEW_TOKENS):
        # deferred: heavy (torch, transformers); prepare imports this module whether or not it captions
        import torch
        from transformers import AutoModelForImageTextToText

        folder = local_model_folder(source, "--captioner")
        try:
            self.model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True).eval()
            self.images, self.tokenizer = _processors(folder)
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001  a broken folder fails in many ways (OSError, ValueError, KeyError)
            raise UsageError(f"--captioner {source}: cannot load an image-to-text model: "
                             f"{first_line(exc, 160)}") from None
        self.source, self.max_new_tokens = source, max_new_tokens
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        settings = f"{folder_identity(folder)}:{max_new_tokens}"
        self.key = hashlib.sha256(settings.encode()).hexdigest()[:16]

    def caption(self, images: list[np.ndarray]) -> list[str]:
        """One caption per RGB image (greedy decoding: the same image gives the same caption)."""
        import torch  # deferred: heavy (torch), as in __init__

        inputs = self.images(images=list(images), return_tensors="pt").to(self.device)
        with torch.no_grad():
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [re.sub(r"\s+", " ", text).strip() for text in texts]


def _processors(folder: Path):
    """(what turns images into model inputs, what decodes ids): the folder's processor when it has
    one (BLIP), else its image processor and tokenizer (VisionEncoderDecoder folders)."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer  # deferred: heavy (transformers)

    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    if hasattr(processor, "image_processor") and hasattr(processor, "batch_decode"):
        return processor, processor
    return (AutoImageProcessor.from_pretrained(folder, local_files_only=True),
            AutoTokenizer.from_pretrained(folder, local_files_only=True))


class CaptionCache:
    """Captions by (image content, captioner): DATA/cache/captions/<model>/<sha[:2]>/<sha>.txt."""

    def __init__(self, cache_root: Path, captioner: Captioner):
        self.captioner = captioner
        self.root = Path(cache_root) / "captions" / captioner.key
        self.generated = 0

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.txt"

    def fill(self, rows: list[dict], progress=None) -> None:
        """Caption the rows whose `caption_source` is "default", in batches; a row whose image
        cannot be read keeps the default (it fails later, with the image's own reason)."""
        todo = []
        for row in rows:
            if row.get("caption_source") != "default":
                continue
            try:
                digest = file_digest(row["image"])
            except OSError:
                continue
            cached = self._path(digest)
            if cached.is_file():
                _use(row, cached.read_text(encoding="utf-8"))
            else:
                todo.append((row, digest))
        task = progress.add_task("captioning", total=len(todo)) if progress and todo else None
        for i in range(0, len(todo), BATCH):
            batch = []
            for row, digest in todo[i:i + BATCH]:
                try:
                    batch.append((row, digest, load_rgb(row["image"])))
                except ImageError:
                    pass
            captions = self.captioner.caption([image for _, _, image in batch]) if batch else []
            self.generated += len(captions)
            for (row, digest, _), caption in zip(batch, captions):
                atomic_write_bytes(self._path(digest), caption.encode("utf-8"))
                _use(row, caption)
            if task is not None:
                progress.advance(task, len(todo[i:i + BATCH]))


def _use(row: dict, caption: str) -> None:
    if caption.strip():  # an empty caption keeps the default one
        row["caption"], row["caption_source"] = caption.strip(), "captioner"
