"""`fmu doctor` tells the truth about this machine (CPU-only torch, no packs, no pytorch3d) and
fails exactly when a requested piece cannot run."""

import importlib.util

import pytest
import torch
from typer.testing import CliRunner

from fmu.app import app
from fmu.core.doctor import diagnose


def _cli(*args):
    return CliRunner().invoke(app, ["doctor", *args], env={"COLUMNS": "240"})


@pytest.fixture(autouse=True)
def _no_insightface_home(monkeypatch, tmp_path):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "empty-insightface"))


def test_reports_the_true_state_of_this_machine(tiny_preset):
    report = diagnose()
    assert report.find("runtime", "torch").detail == torch.__version__
    assert report.find("runtime", "CUDA").ok is torch.cuda.is_available() is False
    assert report.find("base model", "preset tiny").ok
    assert report.find("faces", "dlib").ok
    assert report.find("faces", "insightface buffalo_l").ok is False
    assert "not found" in report.find("faces", "insightface buffalo_l").detail
    assert report.find("faces", "INSIGHTFACE_HOME").detail.endswith("empty-insightface")
    assert report.find("shading", "renderer cpu").ok
    assert (report.find("shading", "renderer pytorch3d").ok
            is (importlib.util.find_spec("pytorch3d") is not None) is False)
    assert report.find("shading", "reconstructor mediapipe").ok
    assert report.find("shading", "reconstructor deca").ok is False
    assert report.exit_code == 0  # nothing was requested


def test_cli_prints_the_table_and_exits_1_for_cuda():
    result = _cli("--devices", "cuda")
    assert result.exit_code == 1
    out = result.output
    assert "fmu doctor" in out and "NOT USABLE (required)" in out
    assert "this torch is a CPU build (torch.version.cuda is None)" in out  # what torch itself reports
    assert "preset tiny" in out and "insightface buffalo_l" in out
    ok = _cli("--devices", "cpu", "--face-backend", "dlib")
    assert ok.exit_code == 0, ok.output


def test_insightface_requested_without_pack_fails_and_with_pack_passes(tmp_path):
    assert _cli("--face-backend", "insightface").exit_code == 1
    from fmu.core.model.tiny_onnx import write_tiny_pack

    write_tiny_pack(tmp_path / "models")
    report = diagnose(face_backend="insightface", face_models=str(tmp_path / "models"))
    check = report.find("faces", "insightface buffalo_l")
    assert check.ok and check.required and str(tmp_path / "models") in check.detail
    assert report.exit_code == 0


def test_requested_base_and_adapter_are_checked(tiny_preset, tmp_path):
    base, adapter = tiny_preset
    report = diagnose(base_model=str(base), adapter=str(adapter))
    assert report.find("base model", str(base)).ok and report.find("adapter", str(adapter)).ok
    assert report.exit_code == 0
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(adapter.read_bytes()[:1000])
    report = diagnose(base_model=str(tmp_path / "nowhere"), adapter=str(bad))
    assert report.find("base model", str(tmp_path / "nowhere")).ok is False
    assert "not a readable safetensors file" in report.find("adapter", str(bad)).detail
    assert report.exit_code == 1
    report = diagnose(base_model="nobody/not-a-cached-model")
    assert "not in the local Hugging Face cache" in report.find("base model", "nobody/not-a-cached-model").detail
