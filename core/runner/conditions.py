"""Shading conditions for the 3D channel, one per (reference, target), cached on disk.

The geometry and rendering live in `core.shading`; this module only decides when a condition
is needed, which frame of the source photo it is rendered in, caches it by content hash and
computes the per-output consistency scores.

Frames (`--frame`): "face" (default) is the authors' demo frame, the square around the shading
source's face landmarks times `frame_scale` (`core.faces.crops.face_frame_box`), so a generated
image shows the face as their demo does wherever it sits in the photo; "centre" is the photo's
centre square (the training frame).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from .. import shading
from ..digests import file_digest
from ..errors import RowError, UsageError
from ..faces.crops import face_frame_box
from ..images import load_rgb
from ..shading.condition import ANALYSIS_SIZE
from ..shading.consistency import ConsistencyScorer
from ..shading.controls import ControlRequest, Controls
from ..shading.controls import resolve as resolve_controls
from ..shading.expression import expression_mesh

FRAMES = ("face", "centre")
EXPRESSIONS_KEPT = 256  # expression meshes remembered per worker (~20 kB each)


def parse_frame(name: str) -> str:
    """A `--frame` value ("center" spelled either way); UsageError for anything else."""
    name = "centre" if name == "center" else name
    if name not in FRAMES:
        raise UsageError(f"--frame {name!r}: use one of {', '.join(FRAMES)}")
    return name


def frame_label(frame: str, scale: float, shading: bool) -> str:
    """What results.parquet records as a row's frame policy (part of the resume match)."""
    if not shading:
        return "none"
    return f"face:{scale:g}" if frame == "face" else "centre"


class ConditionProvider:
    def __init__(self, cache_root: Path, renderer: str = "auto", enabled: bool = True,
                 frame_scale: float | None = None):
        self.enabled = enabled
        self.renderer = renderer
        self.frame_scale = frame_scale  # None: centre frame; else the face frame at this scale
        self.root = Path(cache_root) / "shading"
        self.computed = 0
        self._shading = None
        self._scorer = None
        self._expressions: OrderedDict[str, object] = OrderedDict()  # expression image digest -> its mesh
        if enabled:
            self._shading = shading

    @property
    def wants_landmarks(self) -> bool:
        return self.enabled and self.frame_scale is not None

    def path(self, reference: Path, target: Path | None, size: int, landmarks=None,
             request: ControlRequest | None = None) -> Path:
        """Where the square condition for these inputs is cached."""
        key = self._key(reference, target, size, landmarks, request)
        return self.root / key[:2] / f"{key}.npz"

    def _key(self, reference: Path, target: Path | None, size: int, landmarks, request) -> str:
        parts = [file_digest(p) if p else "-" for p in (reference, target)]
        frame = "centre"
        if self.frame_scale is not None:  # the face frame follows from the landmarks and scale
            points = np.asarray(landmarks, dtype=np.float32).tobytes()
            frame = f"face{self.frame_scale!r}:{hashlib.sha256(points).hexdigest()[:16]}"
        text = f"{parts[0]}:{parts[1]}:{size}:{self.renderer}:{frame}"
        if request is not None and not request.empty:  # no controls: the key (and cache) of before
            expression = request.expression_file
            text += ":" + request.key(file_digest(expression) if expression else None)
        return hashlib.sha256(text.encode()).hexdigest()

    def resolve(self, request: ControlRequest) -> Controls:
        """`request` ready for the renderer; an expression image is reconstructed once per file
        version (NoFaceError / ImageError when it cannot be)."""
        expression = request.expression_file
        mesh = None
        if expression is not None:
            digest = file_digest(expression)
            if digest not in self._expressions:
                self._expressions[digest] = expression_mesh(load_rgb(expression))
                if len(self._expressions) > EXPRESSIONS_KEPT:
                    self._expressions.popitem(last=False)
            self._expressions.move_to_end(digest)
            mesh = self._expressions[digest]
        return resolve_controls(request, expression=mesh)

    def get(self, reference: Path, target: Path | None, width: int, height: int, landmarks=None,
            request: ControlRequest | None = None):
        """The condition in the output's frame: the square render, centre-cropped to the
        output's aspect ratio and resized. `landmarks`: the face landmarks of the image rendered
        (the target's when there is one), required by the face frame. `request`: the pose,
        expression and light asked for (core.shading.controls)."""
        if self.wants_landmarks and landmarks is None:
            raise ValueError("the face frame needs the landmarks of the image rendered")
        result = self._square(reference, target, max(width, height), landmarks, request)
        if result is None or (width, height) == result.condition.shape[::-1]:
            return result
        side = result.condition.shape[0]
        cw, ch = (side, round(side * height / width)) if width >= height else (round(side * width / height), side)
        top, left = (side - ch) // 2, (side - cw) // 2
        crop = Image.fromarray(result.condition[top:top + ch, left:left + cw])
        result.condition = np.asarray(crop.resize((width, height), Image.Resampling.BOX))
        return result

    def _square(self, reference: Path, target: Path | None, size: int, landmarks, request):
        if not self.enabled:
            return None
        path = self.path(reference, target, size, landmarks, request)
        if path.exists():
            try:
                cached = self._shading.load_shading(path)
                if cached.frame:  # entries written before frames were recorded are recomputed
                    return cached
            except (OSError, ValueError, KeyError):
                pass  # damaged entry: recompute
        image = load_rgb(reference)
        target_image = load_rgb(target) if target else None
        source = target_image if target_image is not None else image
        box = None if self.frame_scale is None else face_frame_box(landmarks, source.shape, self.frame_scale)
        # reconstruct at >= 512 px (the face mesh needs detail), then fit the render to the output
        controls = self.resolve(request) if request is not None and not request.empty else None
        result = self._shading.make_condition(image, target_image, size=max(size, ANALYSIS_SIZE),
                                              renderer=self.renderer, box=box, controls=controls)
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
        if self._scorer is None:
            self._scorer = ConsistencyScorer()
        try:
            fit = self._scorer.fit(output)
        except RowError as exc:
            return {"consistency_reason": exc.reason + " (output)"}
        pose, light = self._scorer.errors(fit, (condition.pose, condition.sh))
        return {"pose_error_deg": pose, "light_error": light}
