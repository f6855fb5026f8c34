"""Shared test fixtures: an isolated FMU_HOME, the shipped photos, the tiny preset.

Tests never reach the network: the hub is forced offline, and every model is built from configs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def fmu_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("fmu_home")
    old = os.environ.get("FMU_HOME")
    os.environ["FMU_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("FMU_HOME", None)
    else:
        os.environ["FMU_HOME"] = old


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    import skimage

    from manifests.demo import demo_photos

    found = demo_photos()
    found["chelsea.png"] = Path(os.path.dirname(skimage.__file__)) / "data" / "chelsea.png"  # a cat: no face
    return found


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="session")
def tiny_preset(fmu_home):
    from core.model.presets import ensure_preset

    return ensure_preset("tiny")
