"""Shading conditions in generate: cached per (reference, target), fitted to the output frame,
and the per-output consistency scores."""

import numpy as np

from fmu.core.images import to_square
from fmu.core.runner.conditions import ConditionProvider


def test_conditions_are_cached_and_follow_the_output_frame(tmp_path, photos):
    provider = ConditionProvider(tmp_path, renderer="cpu")
    ref = photos["astronaut.png"]
    a = provider.get(ref, None, 512, 512)
    b = provider.get(ref, None, 512, 512)
    assert provider.computed == 1
    np.testing.assert_array_equal(a.condition, b.condition)
    assert a.condition.shape == (512, 512) and a.condition.max() > 0
    wide = provider.get(ref, None, 768, 512)
    assert wide.condition.shape == (512, 768)
    small = provider.get(ref, None, 64, 64)
    assert small.condition.shape == (64, 64)
    # the target's pose is used: a different face, a different render
    target = provider.get(ref, photos["tom_hanks.png"], 512, 512)
    assert target.from_target and not np.array_equal(target.condition, a.condition)


def test_consistency_scores_against_the_condition(tmp_path, astronaut):
    provider = ConditionProvider(tmp_path, renderer="cpu")
    from pathlib import Path

    from PIL import Image

    Image.fromarray(astronaut).save(tmp_path / "a.png")
    cond = provider.get(Path(tmp_path / "a.png"), None, 512, 512)
    same = provider.consistency(cond, to_square(astronaut, 512))
    assert same["pose_error_deg"] < 0.5 and same["light_error"] < 0.02, same
    rotated = np.asarray(Image.fromarray(astronaut).rotate(20, resample=Image.Resampling.BICUBIC))
    turned = provider.consistency(cond, rotated)
    # roll changes by ~20 degrees: RMSE over three angles is about 20 / sqrt(3)
    assert 9 < turned["pose_error_deg"] < 14, turned
    blank = provider.consistency(cond, np.zeros((512, 512, 3), np.uint8))
    assert list(blank) == ["consistency_reason"]
    assert blank["consistency_reason"].startswith("no_face:") and blank["consistency_reason"].endswith("(output)")
