"""resolve_model: the one place --preset / --base-model / --adapter (--init-adapter) become what a
run loads, for generate and training alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmu.core.errors import UsageError
from fmu.core.model.spec import ModelSpec, resolve_model


def test_a_preset_gives_its_own_files_size_and_version(tiny_preset):
    base, adapter = tiny_preset
    assert resolve_model("tiny", None, None) == ModelSpec(base, adapter, 64, {"preset": "tiny-v1"})
    # an explicit adapter wins over the preset's, the base stays the preset's
    mine = Path("mine.safetensors")
    assert resolve_model("tiny", None, mine) == ModelSpec(base, mine, 64, {"preset": "tiny-v1"})


def test_a_base_model_wins_over_the_preset_and_needs_an_adapter_only_for_generation():
    spec = resolve_model("tiny", "some/base", "a.safetensors")
    assert spec == ModelSpec("some/base", "a.safetensors", 512, {"base_model": "some/base"})
    with pytest.raises(UsageError, match="--base-model needs --adapter"):
        resolve_model(None, "some/base", None)
    # training: no adapter means a fresh one
    assert resolve_model(None, "some/base", None, adapter_flag=None).adapter is None


@pytest.mark.parametrize(("flag", "message"), [("--adapter", "give --preset or --base-model with --adapter"),
                                               (None, "give --preset or --base-model")])
def test_neither_a_preset_nor_a_base_model_is_a_usage_error(flag, message):
    with pytest.raises(UsageError) as caught:
        resolve_model(None, None, None, adapter_flag=flag)
    assert str(caught.value) == message
