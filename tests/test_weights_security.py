"""Weight files are data, never code: corrupted files, code-carrying pickles and files of the
wrong layout each end with a clear error, and nothing in them runs."""

import os
import pickle

import pytest
import torch

from fmu.core.errors import UsageError
from fmu.core.model.convert import load_adapter_any
from fmu.core.model.facemakeup import FaceMakeUp
from fmu.core.model.load import load_base
from fmu.core.model.weights_io import read_state


class _Payload:
    """Unpickling this calls os.system(...), which would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(path, marker):
    # a plausible checkpoint whose ip_adapter carries the payload, in torch's own zip format
    torch.save({"image_proj": {"norm.weight": torch.ones(2)}, "ip_adapter": {"evil": _Payload(marker)}}, path)
    return path


def test_plain_pickle_payload_really_would_run(tmp_path):
    """Control: the payload works when unpickled the unsafe way, so the next tests mean something."""
    marker = tmp_path / "ran"
    with open(tmp_path / "p.pkl", "wb") as fh:
        pickle.dump(_Payload(marker), fh)
    with open(tmp_path / "p.pkl", "rb") as fh:
        pickle.load(fh)  # noqa: S301 - deliberately unsafe, on our own file
    assert marker.exists()


@pytest.mark.parametrize("name", ["model.bin", "model.ckpt", "model.pt"])
def test_code_carrying_pickle_is_refused_unexecuted(tmp_path, name):
    marker = tmp_path / "PWNED"
    path = _evil_pickle(tmp_path / name, marker)
    with pytest.raises(UsageError,
                       match=r"refused: besides tensors it holds Python objects.*nothing in the file was executed"):
        read_state(path)
    with pytest.raises(UsageError, match="refused"):
        load_adapter_any(path)
    assert not marker.exists()


def test_code_carrying_single_file_base_is_refused_unexecuted(tmp_path, tiny_preset):
    base, _ = tiny_preset
    marker = tmp_path / "PWNED"
    path = tmp_path / "sd15.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": _Payload(marker)}}, path)
    with pytest.raises(UsageError, match="refused"):
        load_base(path, torch.device("cpu"), torch.float32, base_config=base)
    assert not marker.exists()


def test_code_carrying_adapter_is_refused_by_load_model(tmp_path, tiny_preset):
    base, _ = tiny_preset
    marker = tmp_path / "PWNED"
    path = _evil_pickle(tmp_path / "model.bin", marker)
    with pytest.raises(UsageError, match="refused"):
        FaceMakeUp.from_pretrained(base, path)
    assert not marker.exists()


def test_corrupted_files_give_a_clear_error(tmp_path, tiny_preset):
    _, adapter = tiny_preset
    data = adapter.read_bytes()
    truncated = tmp_path / "adapter.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="not a readable safetensors file"):
        load_adapter_any(truncated)
    torch.save({"image_proj": {"a": torch.ones(3)}, "ip_adapter": {}}, tmp_path / "ok.bin")
    raw = (tmp_path / "ok.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UsageError, match="not a readable weights file"):
        read_state(tmp_path / "cut.bin")
    (tmp_path / "noise.bin").write_bytes(os.urandom(4096))
    with pytest.raises(UsageError, match="not a readable weights file"):
        read_state(tmp_path / "noise.bin")


def test_wrong_layout_gives_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    save_file({"conv.weight": torch.ones(2, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(UsageError, match=r"neither an fmu adapter nor an IP-Adapter checkpoint.*found conv"):
        load_adapter_any(tmp_path / "other.safetensors")
    torch.save({"image_proj": {"proj.weight": torch.ones(4, 4)}, "ip_adapter": {"1.to_k_ip.weight": torch.ones(4, 4)}},
               tmp_path / "plain_ip_adapter.bin")
    with pytest.raises(UsageError, match="not a FaceID-Plus projection"):
        load_adapter_any(tmp_path / "plain_ip_adapter.bin")
    torch.save([torch.ones(1)], tmp_path / "list.bin")
    with pytest.raises(UsageError, match="holds a list, not a state dict"):
        load_adapter_any(tmp_path / "list.bin")
