"""Pose-RMSE and Light-RMSE against hand computations."""

import math

import numpy as np
import pytest

from fmu.core.shading.consistency import light_error, normalise_sh, pose_error_deg


def test_pose_error_by_hand():
    # differences 3, -4, 12 -> sqrt((9 + 16 + 144) / 3) = sqrt(56.333...)
    assert pose_error_deg([10, 5, 0], [7, 9, -12]) == pytest.approx(math.sqrt(169 / 3))
    assert pose_error_deg([1, 2, 3], [1, 2, 3]) == 0.0
    # Wrap-around: 179 and -179 degrees of roll are 2 degrees apart.
    assert pose_error_deg([0, 0, 179], [0, 0, -179]) == pytest.approx(math.sqrt(4 / 3))


def test_pose_error_batched_and_shape_checked():
    a = np.array([[0, 0, 0], [3, 3, 3]])
    b = np.array([[3, 0, 0], [0, 0, 0]])
    assert np.allclose(pose_error_deg(a, b), [math.sqrt(3), 3.0])
    with pytest.raises(ValueError):
        pose_error_deg([1, 2], [1, 2])


def test_light_error_by_hand():
    a = np.zeros(9)
    a[0] = 2.0                                     # normalised: e0
    b = np.zeros(9)
    b[0], b[1] = 3.0, 4.0                          # normalised: (0.6, 0.8, 0, ...)
    expected = math.sqrt(((1 - 0.6) ** 2 + 0.8 ** 2) / 9)
    assert light_error(a, b) == pytest.approx(expected)
    # Scale invariance: albedo/exposure factors do not count as a lighting change.
    assert light_error(b, 0.3 * b) == pytest.approx(0.0, abs=1e-12)
    # Opposite lights reach the bound 2/3.
    assert light_error(b, -b) == pytest.approx(2 / 3)
    assert np.isnan(normalise_sh(np.zeros(9))).all()
    assert np.allclose(light_error(np.stack([a, b]), np.stack([b, b])), [expected, 0.0])
