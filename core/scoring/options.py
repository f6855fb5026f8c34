"""What `fmu score` is asked to do: the metrics, their models and the machine they run on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .registry import metric_names


@dataclass
class ScoreOptions:
    face_backends: list[str] = field(default_factory=lambda: ["dlib"])
    face_models: Path | None = None       # insightface models folder / pack (--face-models, as in generate)
    det_size: int = 640                   # the paper's detector size
    clip_model: str | None = None
    dino_model: str | None = None
    lpips_weights: Path | None = None
    fid_weights: Path | None = None
    metrics: tuple[str, ...] = field(default_factory=metric_names)   # every registered metric
    device: str = "cpu"
    # of the embedding models (CLIP, DINO); LPIPS and FID keep the fp32 their published values come from
    precision: str = "fp32"
    workers: int = 2
    # how the row metrics are spread (units.py): inline = this process; processes / ray = one worker per
    # `device` entry (a comma list), picked by the caller from core/runner/distribute.py
    engine: str = "inline"
    ray_address: str | None = None
    ray_cpus: float = 1.0
    batch_size: int = 16
    report: bool = True
    sheet: bool = False                   # sheet.png, a contact sheet (sheet.py)
