"""The rows `fmu score` works on: every output and reference decoded once, each row's status and
reasons, and the per-row values the metrics fill in (`ScoreRows.column`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from ..errors import ImageError
from ..images import load_rgb
from ..manifest.people_layout import label, split_paths


def decode_all(paths: list[str], workers: int) -> dict[str, np.ndarray | ImageError]:
    """Every image at `paths` (or the reason it could not be read), decoded in a thread pool."""
    def one(p):
        try:
            return load_rgb(p)
        except ImageError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(zip(paths, pool.map(one, paths)))


def image_paths(rows_df: pl.DataFrame) -> list[str]:
    """Every output and reference path the rows name (a row of several people names one reference
    per person, `|`-separated), sorted, each once."""
    return sorted({p for col in ("image_path", "reference_path") for v in rows_df[col] if v
                   for p in split_paths(v) if p})


def mean_of(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def model_dtype(opts):
    """The torch dtype of the embedding models (CLIP, DINO) for `opts.precision` on `opts.device`;
    a precision the device cannot run is a UsageError."""
    from ..model.load import resolve_dtype  # deferred: torch, only for the metrics that run a torch model

    return resolve_dtype(opts.precision, opts.device)


class ScoreRows:
    """Per-row state the metrics fill in: status, reason and metric values."""

    def __init__(self, df: pl.DataFrame, decoded: dict):
        self.df = df
        self.n = df.height
        self.status = list(df["gen_status"])
        self.errors: list[list[str]] = [[e] if e else [] for e in df["gen_error"]]
        self.values: dict[str, list] = {}
        self.out: list[np.ndarray | None] = [None] * self.n
        self.ref: list[np.ndarray | None] = [None] * self.n
        self.people_refs: list[list[np.ndarray] | None] = [None] * self.n  # rows of several people
        for i, r in enumerate(df.iter_rows(named=True)):
            if self.status[i] != "ok":
                if not self.errors[i]:
                    self.errors[i].append(f"generation {self.status[i]}")
                continue
            self.out[i] = self._image(i, decoded, r["image_path"], "output", "image")
            if r.get("layout"):  # several people: a reference each, no one reference for the row
                refs = [self._image(i, decoded, p, label("reference", k), "reference")
                        for k, p in enumerate(split_paths(r["reference_path"]))]
                self.people_refs[i] = refs if all(x is not None for x in refs) else None
                continue
            self.ref[i] = self._image(i, decoded, r["reference_path"], "reference", "reference")

    def _image(self, i: int, decoded: dict, path: str | None, label: str, what: str):
        """The decoded image at `path`, or None after failing row i with the reason."""
        if path is None:
            self.fail(i, f"{label}: no {what} path")
            return None
        image = decoded.get(path)
        if isinstance(image, ImageError):
            self.fail(i, f"{label}: {image.reason}")
            return None
        return image

    def fail(self, i: int, reason: str, status: str = "failed"):
        if status == "failed" or self.status[i] == "ok":
            self.status[i] = status
        self.errors[i].append(reason)

    def column(self, name: str) -> list:
        return self.values.setdefault(name, [None] * self.n)

    def with_output(self) -> list[int]:
        return [i for i in range(self.n) if self.out[i] is not None]

    def with_pair(self) -> list[int]:
        return [i for i in range(self.n) if self.out[i] is not None and self.ref[i] is not None]

    def with_people(self) -> list[int]:
        return [i for i in range(self.n) if self.out[i] is not None and self.people_refs[i] is not None]

    def unique_refs(self, idx: list[int]) -> tuple[list[str], dict[str, np.ndarray]]:
        """The distinct references of rows `idx` (first seen first) and their images."""
        keys, images = [], {}
        for i in idx:
            key = self.df["reference_path"][i]
            if key not in images:
                keys.append(key)
                images[key] = self.ref[i]
        return keys, images
