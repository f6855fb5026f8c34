"""Shading conditions for the 3D channel, one per (reference, target), cached on disk.

The geometry and rendering live in `core.shading`; this module only decides when a condition
is needed, caches it by content hash and computes the per-output consistency scores.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


class ConditionProvider:
    def __init__(self, cache_root: Path, renderer: str = "auto", enabled: bool = True):
        self.enabled = enabled
        self.renderer = renderer
        self.root = Path(cache_root) / "shading"
        self.computed = 0
        self._shading = None
        if enabled:
            from .. import shading  # imported only when the 3D channel is on

            self._shading = shading

    def _key(self, reference: Path, target: Path | None, size: int) -> str:
        h = hashlib.sha256()
        for p in (reference, target):
            h.update(Path(p).read_bytes() if p else b"-")
        h.update(f"{size}:{self.renderer}".encode())
        return h.hexdigest()

    def get(self, reference: Path, target: Path | None, size: int):
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
        result = self._shading.make_condition(image, target_image, size=size, renderer=self.renderer)
        self.computed += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        self._shading.save_shading(path, result)
        return result

    def consistency(self, condition, output: np.ndarray) -> dict:
        """Pose and lighting of the output against the condition's (reference's or target's)."""
        if condition is None or self._shading is None:
            return {}
        from ..errors import RowError

        try:
            mesh = self._shading.reconstruct(output)
        except RowError as exc:
            return {"consistency_reason": exc.reason + " (output)"}
        sh = self._shading.fit_sh(output, mesh)
        return {"pose_error_deg": self._shading.pose_error_deg(mesh.pose, condition.pose),
                "light_error": self._shading.light_error(sh, condition.sh)}
