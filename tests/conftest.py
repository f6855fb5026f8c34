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

    from fmu.manifests.demo import demo_photos

    found = demo_photos()
    found["chelsea.png"] = Path(os.path.dirname(skimage.__file__)) / "data" / "chelsea.png"  # a cat: no face
    return found


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="session")
def tiny_preset(fmu_home):
    from fmu.core.model.presets import ensure_preset

    return ensure_preset("tiny")


@pytest.fixture(scope="module")
def weighted_model(tiny_preset):
    """The tiny preset's FaceMakeUp (one per test module: tests change its scales) with weight in
    the parts that start at zero: the LoRA's B (like a fresh adapter) and the ShadingNet's zero-convs
    (no effect until trained), so tests see them act."""
    import torch

    from fmu.core.model.facemakeup import FaceMakeUp

    base, adapter = tiny_preset
    m = FaceMakeUp.from_pretrained(base, adapter)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in m.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
        for name, p in m.shading_net.named_parameters():
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name:
                p.normal_(0, 0.05)
    return m


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny random CLIP (model, tokenizer, image processor) saved as a folder: what --clip-model reads."""
    from tiny_models import write_tiny_clip  # tests/tiny_models.py

    return write_tiny_clip(tmp_path_factory.mktemp("clip"))
