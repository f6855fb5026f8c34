"""Quality gating (best-of-N): an image that misses a threshold is made again with the next seed.

`--min-id-sim`, `--max-pose-err`, `--max-light-err` with `--max-tries N`: each image gets up to N
attempts; attempt t (0 = the planned image) uses `attempt_seed(seed, t)`, so the sequence is fixed
by the row's seed alone. Retrying stops at the first attempt that passes; the best attempt is kept
either way and its record says how many were made, their seeds and scores, and `accepted`.

Rules (documented in the README):
- An output with no detectable face counts as identity similarity 0 (what an unrelated face scores
  on both backends' scales), so `--min-id-sim 0` accepts it and any positive threshold rejects it.
- Pose / light thresholds apply where the row has a 3D condition (the reference's or target's
  pose and light); an attempt whose pose / light could not be measured misses them.
- The best attempt: the most thresholds met, then the highest identity similarity, then the
  lowest pose error, then the lowest light error, then the earliest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# golden-ratio step: attempt seeds land far from the planned seeds of neighbouring rows and images
SEED_STEP = 0x9E3779B1


def attempt_seed(seed: int, attempt: int) -> int:
    return (seed + attempt * SEED_STEP) % 2**32


@dataclass(frozen=True)
class Gate:
    min_id_sim: float | None = None
    max_pose_err: float | None = None
    max_light_err: float | None = None
    max_tries: int = 1
    keep_rejected: bool = False

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.min_id_sim, self.max_pose_err, self.max_light_err))

    def misses(self, scores: dict, has_condition: bool) -> list[str]:
        """Why `scores` (an image's record values) fail the thresholds; [] when they pass."""
        reasons = []
        if self.min_id_sim is not None:
            sim = identity(scores)
            if sim < self.min_id_sim:
                reasons.append(f"id_similarity {sim:.3f} < {self.min_id_sim:g}")
        if has_condition:
            for name, limit in (("pose_error_deg", self.max_pose_err), ("light_error", self.max_light_err)):
                if limit is None:
                    continue
                value = scores.get(name)
                if value is None or not math.isfinite(value):
                    reasons.append(f"{name} unmeasured")
                elif value > limit:
                    reasons.append(f"{name} {value:.3f} > {limit:g}")
        return reasons

    def rank(self, scores: dict, has_condition: bool) -> tuple:
        """Sort key of an attempt: larger is better (see the module's rules)."""
        met = 3 - len(self.misses(scores, has_condition))
        return (met, identity(scores), -_or_inf(scores.get("pose_error_deg")), -_or_inf(scores.get("light_error")))


def identity(scores: dict) -> float:
    """The identity value gated on: the worst person's for a row of several; no face counts as 0."""
    sim = scores.get("id_similarity_min", scores.get("id_similarity"))
    return 0.0 if sim is None or not math.isfinite(sim) else float(sim)


def _or_inf(value) -> float:
    return math.inf if value is None or not math.isfinite(value) else float(value)


@dataclass
class Attempt:
    seed: int
    image: object           # the decoded image (numpy array / PIL), as the model returned it
    scores: dict            # the record's score fields for this image
    reasons: list[str]      # the thresholds it missed


def summary(gate: Gate, attempts: list[Attempt], has_condition: bool) -> tuple[int, dict]:
    """(index of the attempt kept, the record fields that describe the gating)."""
    best = max(range(len(attempts)), key=lambda i: (gate.rank(attempts[i].scores, has_condition), -i))
    kept = attempts[best]
    return best, {
        "attempts": len(attempts),
        "attempt_seeds": [a.seed for a in attempts],
        "attempt_id_similarity": [identity(a.scores) for a in attempts],
        "attempt_pose_error_deg": [a.scores.get("pose_error_deg") for a in attempts],
        "attempt_light_error": [a.scores.get("light_error") for a in attempts],
        "kept_seed": kept.seed,
        "accepted": not kept.reasons,
        "rejection_reason": "; ".join(kept.reasons) or None,
    }
