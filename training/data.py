"""Training data: the prepared manifest, phrase -> token indices, the dataset, batches, order.

A prepared manifest (`DATA/train.parquet`, written by `fmu prepare`) has one row per usable
image; see manifests/training.md. Face analysis and shading condition live in content-hash
cache files the row names (`face_file`, `shading_file`), so loading a sample never re-runs a
detector. Captions and masks stay tokenizer-independent: each mask names a *phrase* of the
caption and the dataset maps it to the training tokenizer's token positions here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from PIL import Image

from fmu.core.errors import UsageError
from fmu.core.faces.cache import read_entry
from fmu.core.faces.crops import wide_crop
from fmu.core.images import load_rgb, to_square
from fmu.core.manifest import read_table
from fmu.core.shading import load_shading

MAX_TOKENS = 77  # CLIP's caption length (SD1.5 and the presets): explicit token_indices stay below it
# Bounds per row (manifests/training.md): a longer caption is a row error in `fmu prepare` and a row
# `fmu train` leaves out; phrases past the mask bound are not masked (preview: `too_many_phrases`).
MAX_CAPTION_CHARS = 2000
MAX_MASKS_PER_IMAGE = 32
MASK_DTYPE = pl.List(pl.Struct({"mask": pl.String, "phrase": pl.String, "occurrence": pl.Int64,
                                "token_indices": pl.List(pl.Int64)}))


# ----------------------------------------------------------------------------- phrases -> tokens

def phrase_spans(caption: str, phrase: str) -> list[tuple[int, int]]:
    """Character spans (start, end) of every whole-word, case-insensitive occurrence of phrase
    ("man" does not match inside "woman")."""
    phrase = phrase.strip()
    if not phrase:
        return []
    pattern = r"(?<!\w)" + re.escape(phrase) + r"(?!\w)"
    return [(m.start(), m.end()) for m in re.finditer(pattern, caption, flags=re.IGNORECASE)]


def _token_ranges_by_offsets(tokenizer, caption: str, spans, max_length: int) -> list[int]:
    enc = tokenizer(caption, truncation=True, max_length=max_length, return_offsets_mapping=True)
    found = []
    for index, (s, e) in enumerate(enc["offset_mapping"]):
        if e > s and any(s < end and e > start for start, end in spans):
            found.append(index)
    return found


def prefix_counter(tokenizer, caption: str):
    """count(end): the content tokens (no BOS/EOS) of caption[:end], each prefix tokenised once."""
    counts: dict[int, int] = {}

    def count(end: int) -> int:
        if end not in counts:
            counts[end] = len(tokenizer(caption[:end], add_special_tokens=False).input_ids)
        return counts[end]
    return count


def _token_ranges_by_prefix(tokenizer, caption: str, spans, max_length: int, count=None) -> list[int]:
    """Fallback for tokenizers without offsets: count the tokens of the caption's prefixes.
    Exact for word-level pre-tokenisers (CLIP BPE) because a span starts and ends on word edges.
    Spans past the truncation are not tokenised (prefix counts only grow)."""
    count = count or prefix_counter(tokenizer, caption)
    found = []
    for start, end in sorted(spans):
        first = count(start)
        if first >= max_length - 1:
            break
        found.extend(1 + i for i in range(first, count(end)))  # +1: BOS at position 0
    return sorted(i for i in set(found) if i < max_length - 1)


def phrase_occurrence_spans(caption: str, phrase: str, occurrence: int | None = None) -> list[tuple[int, int]]:
    """The spans `phrase_token_indices` maps to tokens: every occurrence, or the `occurrence`-th
    (0-based). Raises ValueError for an absent phrase or an occurrence that does not exist (what
    `fmu prepare` checks, without a tokenizer)."""
    spans = phrase_spans(caption, phrase)
    if not spans:
        raise ValueError(f"phrase {phrase!r} does not occur in caption {caption!r}")
    if occurrence is not None:
        if not 0 <= occurrence < len(spans):
            raise ValueError(f"phrase {phrase!r} occurs {len(spans)} time(s); occurrence {occurrence} "
                             "does not exist")
        spans = [spans[occurrence]]
    return spans


def caption_problem(caption: str) -> str | None:
    """Why a caption is refused (too long to be a caption), or None."""
    if len(caption or "") > MAX_CAPTION_CHARS:
        return (f"caption_too_long: {len(caption)} characters (at most {MAX_CAPTION_CHARS}; CLIP reads "
                f"only the first {MAX_TOKENS} tokens)")
    return None


def masks_problem(count: int) -> str | None:
    """Why a row's number of masks is refused, or None."""
    if count > MAX_MASKS_PER_IMAGE:
        return f"too_many_masks: {count} masks (at most {MAX_MASKS_PER_IMAGE} per image)"
    return None


def check_token_indices(indices: list[int], max_length: int = MAX_TOKENS) -> None:
    """Explicit token positions must fall inside the padded `input_ids` (BOS = 0)."""
    outside = [i for i in indices if not 0 <= i < max_length]
    if outside:
        raise ValueError(f"token_indices {outside} outside 0..{max_length - 1} (the {max_length}-token caption)")


def phrase_token_indices(tokenizer, caption: str, phrase: str, occurrence: int | None = None,
                         method: str = "auto") -> list[int]:
    """Positions (in the padded `input_ids`, BOS = 0) of the tokens that spell `phrase` in
    `caption`. A phrase found several times maps to all its occurrences unless `occurrence`
    (0-based) picks one. Tokens cut off by truncation are dropped; an absent phrase raises."""
    spans = phrase_occurrence_spans(caption, phrase, occurrence)
    max_length = tokenizer.model_max_length
    if method in ("auto", "offsets"):
        try:
            return _token_ranges_by_offsets(tokenizer, caption, spans, max_length)
        except (NotImplementedError, KeyError, TypeError):
            if method == "offsets":
                raise
    return _token_ranges_by_prefix(tokenizer, caption, spans, max_length)


# ----------------------------------------------------------------------------- manifests

def parse_masks(value) -> list[dict]:
    """A manifest's `masks` cell: a list of {mask, phrase[, occurrence][, token_indices]}
    (Parquet list-of-struct) or the same as a JSON string (CSV); empty/None -> []."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return []
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"masks is not valid JSON ({exc.msg})") from None
    if isinstance(value, pl.Series):
        value = value.to_list()
    if not isinstance(value, list):
        raise ValueError("masks must be a list of {mask, phrase} objects")
    return [_parse_mask(item) for item in value]


def _parse_mask(item) -> dict:
    """One mask entry, its types checked (a JSON cell may hold anything)."""
    if not isinstance(item, dict) or not item.get("mask"):
        raise ValueError("each mask needs a 'mask' image path")
    name = item["mask"]
    if not isinstance(name, str):
        raise ValueError(f"mask {name!r}: 'mask' must be a path string")
    phrase, occurrence, indices = item.get("phrase"), item.get("occurrence"), item.get("token_indices")
    if not phrase and not indices:
        raise ValueError(f"mask {name}: give a 'phrase' (or explicit 'token_indices')")
    if phrase is not None and not isinstance(phrase, str):
        raise ValueError(f"mask {name}: 'phrase' must be a string, not {phrase!r}")
    if occurrence is not None and not _is_int(occurrence, minimum=0):
        raise ValueError(f"mask {name}: 'occurrence' must be an integer >= 0, not {occurrence!r}")
    if indices is not None:
        if isinstance(indices, pl.Series):
            indices = indices.to_list()
        if not isinstance(indices, list) or not all(_is_int(i, minimum=0) for i in indices):
            raise ValueError(f"mask {name}: 'token_indices' must be a list of integers >= 0, not {indices!r}")
    return {"mask": name, "phrase": phrase,
            "occurrence": None if occurrence is None else int(occurrence),
            "token_indices": None if indices is None else [int(i) for i in indices]}


def _is_int(value, minimum: int) -> bool:
    # bool is an int to Python, and 1.0 would silently index; neither is a position
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum


def read_training_manifest(path: Path) -> pl.DataFrame:
    """`image`, `caption` (optional), `masks` (optional) from CSV or Parquet, read as generation
    manifests are (core/manifest: separator sniffed, unreadable records as rows with a reason)."""
    path = Path(path)
    df = read_table(path, "training manifest")  # a record it cannot read: a row with a READ_ERROR cell
    if "image" not in df.columns:
        raise UsageError(f"training manifest {path.name} needs an 'image' column (has {df.columns})")
    return df


def data_digest(df: pl.DataFrame) -> dict:
    """The rows a run trains on, in order, as one digest (image content when prepared, caption,
    masks): a checkpoint keeps it so that resuming on re-prepared data is noticed."""
    columns = [c for c in ("image_sha256", "image", "caption", "masks") if c in df.columns]
    h = hashlib.sha256()
    for row in df.select(columns).iter_rows():
        h.update(json.dumps(row, default=str).encode())
    return {"rows": df.height, "digest": h.hexdigest()}


# ----------------------------------------------------------------------------- the dataset

class LoadingStopped(Exception):
    """A stop was asked for while a batch was being built (`TrainingSet.stop_requested`)."""

@dataclass
class Sample:
    index: int
    id: str
    pixels: torch.Tensor          # (3, S, S) in [-1, 1]
    input_ids: torch.Tensor       # (L,)
    id_embedding: torch.Tensor    # (D,)
    face_crop: np.ndarray         # (s, s, 3) uint8, for the CLIP image encoder
    face_box: torch.Tensor        # (4,) x1 y1 x2 y2 in the S x S training frame
    condition: torch.Tensor       # (3, S, S) in [0, 1]
    masks: list                   # [(1, S, S) float]
    token_indices: list           # [[int]]


def square_box(bbox: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
    """A box in image pixels -> the same box in `to_square(image, size)`'s frame."""
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    scale = size / side
    x1, y1, x2, y2 = [float(v) for v in bbox]
    box = np.array([(x1 - left) * scale, (y1 - top) * scale, (x2 - left) * scale, (y2 - top) * scale])
    return np.clip(box, 0, size).astype(np.float32)


class TrainingSet(torch.utils.data.Dataset):
    """Samples of a prepared manifest at `size` px in the shared square frame. `face_crop` is the
    CLIP face-image style of the adapter being trained (`core.faces.crops`): the prepared cache
    holds the aligned crop; the wide one is cut here from the image and the cached landmarks."""

    def __init__(self, manifest: Path, tokenizer, size: int, face_crop: str = "aligned"):
        self.manifest = Path(manifest)
        self.root = self.manifest.parent
        self.df = read_training_manifest(self.manifest)
        for column in ("face_file", "shading_file"):
            if column not in self.df.columns:
                raise UsageError(f"{self.manifest} is not prepared (no {column!r}); run `fmu prepare` first")
        self.rows, self.refused = [], []   # refused: (row id, reason) of the rows left out
        for number, row in enumerate(self.df.to_dicts()):
            why = caption_problem(row.get("caption") or "")
            try:
                row["masks"] = parse_masks(row.get("masks"))
            except ValueError as exc:
                why = why or f"bad_masks: {exc}"
            why = why or masks_problem(len(row["masks"]))
            if why:
                self.refused.append((str(row.get("id") or number), why))
            else:
                self.rows.append(row)
        self.tokenizer, self.size, self.face_crop = tokenizer, size, face_crop
        # asked before each item is loaded: when it answers True, __getitem__ raises LoadingStopped, so a
        # stop signal waits for one item, not for a whole batch (the trainer sets it around its batches)
        self.stop_requested = None

    def __len__(self) -> int:
        return len(self.rows)

    def resolve(self, value: str) -> Path:
        """A path the manifest names (image, cache file, mask), relative to its folder."""
        p = Path(value)
        return p if p.is_absolute() else self.root / p

    def tokenize(self, caption: str) -> torch.Tensor:
        return self.tokenizer(caption, padding="max_length", truncation=True,
                              max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids[0]

    def token_indices(self, caption: str, mask: dict) -> list[int]:
        if mask.get("token_indices") is not None:
            indices = [int(i) for i in mask["token_indices"]]
            check_token_indices(indices, self.tokenizer.model_max_length)  # data prepared before the check
            return indices
        return phrase_token_indices(self.tokenizer, caption, mask["phrase"], mask.get("occurrence"))

    def encode(self, caption: str, masks: list[dict]) -> tuple[torch.Tensor, list[list[int]]]:
        """(input_ids, each mask's token positions) with the caption tokenised once for the row
        (a fast tokenizer's offsets); a tokenizer without offsets counts prefix tokens, once per
        distinct prefix and none past the truncation."""
        max_length = self.tokenizer.model_max_length
        try:
            enc = self.tokenizer(caption, padding="max_length", truncation=True, max_length=max_length,
                                 return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
        except (NotImplementedError, KeyError, TypeError):
            count = prefix_counter(self.tokenizer, caption)
            return self.tokenize(caption), [
                self.token_indices(caption, m) if m.get("token_indices") is not None else
                _token_ranges_by_prefix(self.tokenizer, caption,
                                        phrase_occurrence_spans(caption, m["phrase"], m.get("occurrence")),
                                        max_length, count)
                for m in masks]
        positions = []
        for m in masks:
            if m.get("token_indices") is not None:
                positions.append(self.token_indices(caption, m))
                continue
            spans = phrase_occurrence_spans(caption, m["phrase"], m.get("occurrence"))
            positions.append([i for i, (s, e) in enumerate(offsets)
                              if e > s and any(s < end and e > start for start, end in spans)])
        return torch.tensor(enc["input_ids"], dtype=torch.long), positions

    def __getitem__(self, index: int) -> Sample:
        if self.stop_requested is not None and self.stop_requested():
            raise LoadingStopped(index)
        row, size = self.rows[index], self.size
        image = load_rgb(self.resolve(row["image"]))
        square = to_square(image, size)
        face = read_entry(self.resolve(row["face_file"]))
        shading = load_shading(self.resolve(row["shading_file"]))
        cond = shading.condition
        if cond.shape[0] != size:
            cond = np.asarray(Image.fromarray(cond).resize((size, size), Image.Resampling.BOX))
        caption = row.get("caption") or ""
        masks = []
        for m in row["masks"]:  # parsed and bounded when the set was read
            grey = np.asarray(Image.open(self.resolve(m["mask"])).convert("L"))
            masks.append(torch.from_numpy(to_square(grey, size).astype(np.float32) / 255.0)[None])
        input_ids, tokens = self.encode(caption, row["masks"])
        return Sample(
            index=index, id=str(row.get("id") or index),
            pixels=torch.from_numpy(np.array(square)).permute(2, 0, 1).float() / 127.5 - 1.0,
            input_ids=input_ids,
            id_embedding=torch.from_numpy(np.asarray(face.embedding, dtype=np.float32)),
            face_crop=face.crop if self.face_crop == "aligned" else wide_crop(image, face.landmarks),
            face_box=torch.from_numpy(square_box(face.bbox, image.shape[0], image.shape[1], size)),
            condition=torch.from_numpy(np.repeat(cond[None], 3, 0).astype(np.float32) / 255.0),
            masks=masks, token_indices=tokens)


def collate(samples: list[Sample]) -> dict:
    return {
        "index": [s.index for s in samples], "id": [s.id for s in samples],
        "pixels": torch.stack([s.pixels for s in samples]),
        "input_ids": torch.stack([s.input_ids for s in samples]),
        "id_embedding": torch.stack([s.id_embedding for s in samples]),
        "face_crop": [s.face_crop for s in samples],
        "face_box": torch.stack([s.face_box for s in samples]),
        "condition": torch.stack([s.condition for s in samples]),
        "masks": [s.masks for s in samples], "token_indices": [s.token_indices for s in samples],
    }


# ----------------------------------------------------------------------------- data order

@dataclass
class DataOrder:
    """Which samples each rank sees, as a pure function of (seed, epoch): resumable exactly.

    Each epoch is a seeded permutation, padded by wrapping around (like DistributedSampler) to a
    multiple of world × batch; rank r takes every world-th sample from r, in batches."""

    num_samples: int
    batch_size: int
    seed: int
    rank: int = 0
    world: int = 1

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.num_samples / (self.world * self.batch_size))

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(self.num_samples, generator=g).tolist()
        total = self.batches_per_epoch * self.world * self.batch_size
        order = (order * math.ceil(total / len(order)))[:total]
        mine = order[self.rank::self.world]
        return [mine[i:i + self.batch_size] for i in range(0, len(mine), self.batch_size)]

    def batches_from(self, position: int):
        """Yield (position, batch) forever, starting at micro-batch number `position`."""
        epoch, offset = divmod(position, self.batches_per_epoch)
        while True:
            for batch in self.epoch_batches(epoch)[offset:]:
                yield position, batch
                position += 1
            epoch, offset = epoch + 1, 0
