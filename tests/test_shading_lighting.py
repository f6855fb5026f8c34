"""SH basis values, least-squares recovery of known lighting, robustness to occluders."""

import numpy as np
import pytest

from fmu.core.images import to_square
from fmu.core.shading.light_fit import fit_sh
from fmu.core.shading.lighting import SH_CONSTANTS, sh_basis, shade, solve_sh, view_normals
from fmu.core.shading.reconstruct import reconstruct
from fmu.core.shading.render import normal_map, render

# Ambient + light from the upper right front; chosen so shading stays inside (0, 1) on the face.
TRUE_SH = np.array([1.55, 0.18, 0.55, 0.22, 0.05, -0.06, 0.04, 0.07, -0.05])


def test_basis_against_hand_values():
    s = 1 / np.sqrt(3)
    got = sh_basis(np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [s, s, s]]))
    front = [0.282095, 0, 0.488603, 0, 0, 0, 0.315392 * 2, 0, 0]
    right = [0.282095, 0, 0, 0.488603, 0, 0, -0.315392, 0, 0.546274]
    diag = [0.282095, 0.488603 * s, 0.488603 * s, 0.488603 * s, 1.092548 / 3, 1.092548 / 3, 0.0,
            1.092548 / 3, 0.0]
    assert np.allclose(got, [front, right, diag], atol=1e-12)
    assert np.allclose(SH_CONSTANTS[0] ** 2 * 4 * np.pi, 1.0, atol=1e-5)  # Y00 is orthonormal on the sphere
    # Pixel frame -> view frame flips y and z.
    assert np.allclose(view_normals([[0.0, 0.5, -1.0]]), [[0.0, -0.5, 1.0]])
    assert shade(np.array([0.0, 0.0, 1.0]), TRUE_SH) == pytest.approx(np.dot(front, TRUE_SH))


@pytest.fixture(scope="module")
def scene(astronaut):
    frame = to_square(astronaut, 512)
    return frame, reconstruct(frame)


def test_fit_recovers_the_lighting_of_a_synthetic_render(scene):
    _, mesh = scene
    normals, mask = normal_map(mesh, 512, 512, backend="cpu")
    values = shade(view_normals(normals[mask]), TRUE_SH)
    assert values.min() > 0.05 and values.max() < 0.98  # no clipping: the fit sees the true model
    grey = render(mesh, TRUE_SH, 512, backend="cpu")
    image = np.repeat(grey[..., None], 3, axis=2)
    sh = fit_sh(image, mesh)
    assert sh.shape == (9,)
    rel = np.linalg.norm(sh - TRUE_SH) / np.linalg.norm(TRUE_SH)
    assert rel < 0.05, (rel, sh)
    per_rgb = fit_sh(image, mesh, per_channel=True)
    assert per_rgb.shape == (3, 9)
    assert np.allclose(per_rgb, sh[None], atol=1e-4)  # grey image: all channels equal luminance


def test_fit_ignores_an_occluder(scene):
    _, mesh = scene
    grey = render(mesh, TRUE_SH, 512, backend="cpu")
    image = np.repeat(grey[..., None], 3, axis=2)
    ys, _xs = np.nonzero(grey)
    # A black bar across the eyes (~10 % of the face): plain least squares would be pulled down.
    top = int(np.percentile(ys, 30))
    image[top:top + int(0.1 * np.ptp(ys)), :] = 0
    sh = fit_sh(image, mesh)
    assert np.linalg.norm(sh - TRUE_SH) / np.linalg.norm(TRUE_SH) < 0.05
    basis = sh_basis(view_normals(normal_map(mesh, 512, 512, backend="cpu")[0][grey > 0]))
    plain = np.linalg.lstsq(basis, (image[grey > 0] / 255.0) @ [0.299, 0.587, 0.114], rcond=None)[0]
    assert np.linalg.norm(plain - TRUE_SH) > np.linalg.norm(sh - TRUE_SH)


def test_solve_sh_on_hand_made_normals():
    rng = np.random.default_rng(3)
    n = rng.normal(size=(2000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    basis = sh_basis(n)
    values = basis @ TRUE_SH
    assert np.allclose(solve_sh(basis, values), TRUE_SH, atol=1e-9)


def test_fit_on_the_real_photo_is_plausible(scene):
    frame, mesh = scene
    sh = fit_sh(frame, mesh)
    # Mostly frontal ambient studio light: the constant and the frontal (z) terms dominate.
    assert sh[0] > 0 and sh[2] > 0
    assert abs(sh[0]) == np.abs(sh).max()
