"""A LoRA knows its adapter: the LoRA file records the sha256 of the adapter file it was trained on,
and `fmu generate --lora` refuses it on another adapter (--force-lora overrides); LoRAs written
before the record existed load with a warning."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from typer.testing import CliRunner

from fmu.app import app
from fmu.core.model import adapter as A
from fmu.core.model import lora as L
from fmu.core.model.facemakeup import FaceMakeUp


@pytest.fixture(scope="module")
def loras(tiny_preset, tmp_path_factory):
    """A finetune-style LoRA saved from a model loaded on the preset adapter (what `fmu finetune`
    does: trainable.save_trained_weights -> save_lora_weights), and the same LoRA without the record."""
    base, adapter = tiny_preset
    folder = tmp_path_factory.mktemp("loras")
    model = FaceMakeUp.from_pretrained(base, adapter)
    L.add_lora(model.unet, 4, name=L.FINETUNE_ADAPTER)
    with torch.no_grad():
        for name, p in model.unet.named_parameters():
            if f".{L.FINETUNE_ADAPTER}." in name and "lora_B" in name:
                p.normal_(0, 0.05)
    model.save_lora_weights(folder / "lora.safetensors", extra_meta={"mode": "lora"})
    L.write_lora_file(folder / "old.safetensors", model.unet, L.FINETUNE_ADAPTER)  # no adapter record
    tensors, meta = A.read_adapter(adapter)
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 0.01
    A.write_adapter(folder / "other.safetensors", tensors, meta)
    return adapter, folder


def test_the_lora_records_the_sha256_of_its_adapter_file(loras):
    adapter, folder = loras
    _, meta = L.read_lora_file(folder / "lora.safetensors")
    assert L.lora_adapter_digest(meta) == hashlib.sha256(adapter.read_bytes()).hexdigest()
    assert json.loads(meta["mode"]) == "lora"
    assert L.lora_adapter_digest(L.read_lora_file(folder / "old.safetensors")[1]) is None


def _generate(tmp_path, photos, *args):
    tmp_path.mkdir(parents=True, exist_ok=True)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id,reference,prompt\nh,{photos['tom_hanks.png']},a portrait\n")
    return CliRunner().invoke(app, ["generate", str(manifest), "--out", str(tmp_path / "run"), "--steps", "2",
                                    *map(str, args)])


def test_generate_applies_it_on_its_adapter_and_refuses_another(loras, tmp_path, photos):
    _, folder = loras
    ok = _generate(tmp_path / "a", photos, "--lora", folder / "lora.safetensors")
    assert ok.exit_code == 0, ok.output
    assert "warning" not in ok.output
    refused = _generate(tmp_path / "b", photos, "--lora", folder / "lora.safetensors",
                        "--adapter", folder / "other.safetensors")
    assert refused.exit_code == 2
    assert "was trained on another adapter" in refused.output and "--force-lora" in refused.output
    assert not (tmp_path / "b" / "run" / "images").exists()
    forced = _generate(tmp_path / "c", photos, "--lora", folder / "lora.safetensors",
                       "--adapter", folder / "other.safetensors", "--force-lora")
    assert forced.exit_code == 0, forced.output
    assert "applied anyway (--force-lora)" in forced.output


def test_a_lora_without_the_record_loads_with_a_warning(loras, tmp_path, photos):
    _, folder = loras
    result = _generate(tmp_path, photos, "--lora", folder / "old.safetensors")
    assert result.exit_code == 0, result.output
    assert "does not record which adapter it was trained on" in result.output
    assert (tmp_path / "run" / "images" / "h_0.png").is_file()
