"""Shading conditions for the 3D channel, one per (reference, target), cached on disk.

The geometry and rendering live in `core.shading`; this module only decides when a condition
is needed, caches it by content hash and computes the per-output consistency scores.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from ..digests import file_digest
from ..shading.condition import ANALYSIS_SIZE


class ConditionProvider:
    def __init__(self, cache_root: Path, renderer: str = "auto", enabled: bool = True):
        self.enabled = enabled
        self.renderer = renderer
        self.root = Path(cache_root) / "shading"
        self.computed = 0
        self._shading = None
        self._scorer = None
        if enabled:
            from .. import shading  # imported only when the 3D channel is on

            self._shading = shading

    def _key(self, reference: Path, target: Path | None, size: int) -> str:
        parts = [file_digest(p) if p else "-" for p in (reference, target)]
        return hashlib.sha256(f"{parts[0]}:{parts[1]}:{size}:{self.renderer}".encode()).hexdigest()

    def get(self, reference: Path, target: Path | None, width: int, height: int):
        """The condition in the output's frame: the square render, centre-cropped to the
        output's aspect ratio (the same crop `to_square` would give the reference) and resized."""
        result = self._square(reference, target, max(width, height))
        if result is None or (width, height) == result.condition.shape[::-1]:
            return result
        side = result.condition.shape[0]
        cw, ch = (side, round(side * height / width)) if width >= height else (round(side * width / height), side)
        top, left = (side - ch) // 2, (side - cw) // 2
        crop = Image.fromarray(result.condition[top:top + ch, left:left + cw])
        result.condition = np.asarray(crop.resize((width, height), Image.Resampling.BOX))
        return result

    def _square(self, reference: Path, target: Path | None, size: int):
        if not self.enabled:
            return None
        from ..images import load_rgb

        key = self._key(reference, target, size)
        path = self.root / key[:2] / f"{key}.npz"
        if path.exists():
            try:
                return self._shading.load_shading(path)
            except (OSError, ValueError, KeyError):
                pass  # damaged entry: recompute
        image = load_rgb(reference)
        target_image = load_rgb(target) if target else None
        # reconstruct at >= 512 px (the face mesh needs detail), then fit the render to the output
        result = self._shading.make_condition(image, target_image, size=max(size, ANALYSIS_SIZE),
                                              renderer=self.renderer)
        if result.condition.shape[0] != size:
            small = Image.fromarray(result.condition).resize((size, size), Image.Resampling.BOX)
            result.condition = np.asarray(small)
        self.computed += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        self._shading.save_shading(path, result)
        return result

    def consistency(self, condition, output: np.ndarray) -> dict:
        """Pose and lighting of the output against the condition's (reference's or target's),
        through the same scorer `fmu score` uses."""
        if condition is None or self._shading is None:
            return {}
        from ..errors import RowError
        from ..scoring.consistency import ConsistencyScorer

        if self._scorer is None:
            self._scorer = ConsistencyScorer()
        try:
            fit = self._scorer.fit(output)
        except RowError as exc:
            return {"consistency_reason": exc.reason + " (output)"}
        pose, light = self._scorer.errors(fit, (condition.pose, condition.sh))
        return {"pose_error_deg": pose, "light_error": light}
