"""Stages 3-4 of the data (target masks, text-region alignment): phrases of a caption -> mask files.

For one row: the caption's phrases (`training.phrases`), minus the ones a given mask already
covers (given masks win for their phrases), are masked with the regions they name, as parsed by a
`core.regions` parser on the row's face. Each mask is a greyscale PNG (white = the phrase's
region) at the image's size:

    DATA/masks/<parser>-<identity>/<sha[:2]>/<sha>-<face>-<region[+region]>.png

named by image content (sha256), the face box it was parsed for, the parser and the region(s),
and next to them `<sha>-<face>.json` with every region's outcome (produced, or why not). A
re-run finds both and parses nothing. The row's `masks` entries use the schema `fmu train`
reads (`mask`, `phrase`, `occurrence`: which occurrence of that text in the caption, so repeated
phrases stay apart); paths are relative to DATA, like the cache files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmu.core.images import atomic_write_bytes, save_png
from fmu.core.regions import RegionParser

from .data import MAX_MASKS_PER_IMAGE, phrase_occurrence_spans, phrase_spans
from .phrases import Phrase, extract_phrases

COVERED = "given"  # what a phrase covered by a given mask records as its mask source


@dataclass
class RowMasks:
    entries: list[dict] = field(default_factory=list)      # masks-column entries (auto ones)
    phrases: list[str] = field(default_factory=list)        # every phrase found in the caption
    masked: list[str] = field(default_factory=list)         # ... with a mask (auto or given)
    unmasked: list[dict] = field(default_factory=list)      # {phrase, reason} for the others


def parser_folder_name(parser: RegionParser) -> str:
    kind = parser.name.split(":", 1)[0]
    digest = hashlib.sha256(json.dumps(parser.identity(), sort_keys=True).encode()).hexdigest()[:12]
    return f"{kind}-{digest}"


def _box_key(box) -> str:
    if box is None:
        return "whole"
    return hashlib.sha256(",".join(str(round(float(v))) for v in box).encode()).hexdigest()[:8]


def given_spans(caption: str, given: list[dict]) -> list[tuple[int, int]]:
    """Character spans the given masks' phrases cover (prepare has checked they exist)."""
    spans = []
    for m in given:
        if m.get("phrase"):
            spans += phrase_occurrence_spans(caption, m["phrase"], m.get("occurrence"))
    return spans


def occurrence_of(caption: str, phrase: Phrase) -> int:
    """Which occurrence (0-based) of its text the phrase is, counted as training counts them."""
    starts = [s for s, _ in phrase_spans(caption, phrase.text)]
    return starts.index(phrase.start)


class MaskMaker:
    """Masks for the rows of one data folder, from one parser (built by the caller, once per process)."""

    def __init__(self, out: Path, parser: RegionParser):
        self.out, self.parser = Path(out), parser
        self.root = self.out / "masks" / parser_folder_name(parser)
        self.parsed = 0  # parser runs (not served from the mask files)

    def _stem(self, digest: str, box) -> Path:
        return self.root / digest[:2] / f"{digest}-{_box_key(box)}"

    def row_masks(self, image: np.ndarray, digest: str, box, caption: str, given: list[dict]) -> RowMasks:
        phrases = extract_phrases(caption)
        covered = given_spans(caption, given)
        result = RowMasks(phrases=[p.text for p in phrases])
        todo = [p for p in phrases if not any(p.start < e and s < p.end for s, e in covered)]
        stem = self._stem(digest, box)
        outcomes = self._outcomes(stem, image, box, {p.regions for p in todo}) if todo else {}
        room = MAX_MASKS_PER_IMAGE - len(given)  # the row's masks stay within the bound
        for p in phrases:
            if p not in todo:  # a given mask covers it
                result.masked.append(p.text)
            elif len(result.entries) >= room:
                result.unmasked.append({"phrase": p.text, "reason": f"too_many_phrases: only the first "
                                        f"{MAX_MASKS_PER_IMAGE} masks of an image are kept"})
            elif any(outcomes.get(r) is None for r in p.regions):
                name = f"{stem.name}-{'+'.join(p.regions)}.png"
                result.entries.append({"mask": str((stem.parent / name).relative_to(self.out)), "phrase": p.text,
                                       "occurrence": occurrence_of(caption, p), "token_indices": None})
                result.masked.append(p.text)
            else:
                result.unmasked.append({"phrase": p.text, "reason": outcomes[p.regions[0]]})
        return result

    def _outcomes(self, stem: Path, image: np.ndarray, box, wanted: set[tuple[str, ...]]) -> dict:
        """{region: None (produced) or reason}, with a PNG for every wanted region set that has a
        produced region; parses only when the files of an earlier run are not all there."""
        status = stem.with_suffix(".json")
        try:
            outcomes = json.loads(status.read_text())["regions"]
        except (OSError, ValueError, KeyError, TypeError):
            outcomes = None
        files = {regions: stem.parent / f"{stem.name}-{'+'.join(regions)}.png" for regions in wanted}
        if outcomes is not None:
            needed = [path for regions, path in files.items()
                      if any(outcomes.get(r, "?") is None for r in regions)]
            if all(path.is_file() for path in needed):
                return outcomes
        parsed = self.parser.parse(image, box)
        self.parsed += 1
        outcomes = {name: parsed.missing.get(name) for name in {*parsed.masks, *parsed.missing}}
        for regions, path in files.items():
            mask, _ = parsed.union(regions)
            if mask is not None:
                save_png(path, (mask.astype(np.uint8) * 255))
        atomic_write_bytes(status, json.dumps({"parser": self.parser.name, "identity": self.parser.identity(),
                                               "regions": outcomes}, sort_keys=True, indent=1).encode())
        return outcomes
