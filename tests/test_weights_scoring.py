"""`fmu weights pull --set scoring` against the local hub stand-in (tests/hub_standin.py): CLIP and
DINO from their hub repos, LPIPS and the FID Inception from their file URLs, byte-identical in the
layout; the pull adds to a folder's generate set; `fmu score --weights DIR` runs every metric on
them; doctor names the command for what is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_run import invoke
from PIL import Image

from fmu.core.weights.layout import RECORD, roles_of
from fmu.core.weights.sets import CLIP_L14, DINO, INCEPTION, LPIPS

sys.path.insert(0, str(Path(__file__).parent))
from hub_standin import HubStandIn
from tiny_models import write_tiny_clip

ROOT = Path(__file__).resolve().parents[1]
ALEX = [(3, 64, 11), (64, 192, 5), (192, 384, 3), (384, 256, 3), (256, 256, 3)]


def _tiny_dino(d: Path) -> None:
    from transformers import ViTConfig, ViTModel

    from fmu.core.scoring.dino import _image_processor_class

    torch.manual_seed(0)
    model = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                               image_size=32, patch_size=16), add_pooling_layer=False)
    model.config.save_pretrained(d)
    torch.save(model.state_dict(), d / "pytorch_model.bin")   # the published repo's format (main has no safetensors)
    _image_processor_class()(size={"height": 32, "width": 32}).save_pretrained(d)


def _state_files(tmp: Path) -> dict[str, bytes]:
    """Random LPIPS AlexNet + heads and an FID Inception, saved as the published files are."""
    from fmu.core.scoring.inception_fid import FIDInceptionV3

    g = torch.Generator().manual_seed(0)
    backbone = {}
    for idx, (cin, cout, k) in zip((0, 3, 6, 8, 10), ALEX):
        backbone[f"features.{idx}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2 / (cin * k * k)) ** 0.5
        backbone[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.01
    lins = {f"lin{j}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
            for j, c in enumerate((64, 192, 384, 256, 256))}
    torch.manual_seed(0)
    files = {"alexnet-owt-7be5be79.pth": backbone, "alex.pth": lins,
             INCEPTION.files[0].name: FIDInceptionV3().state_dict()}
    out = {}
    for name, state in files.items():
        torch.save(state, tmp / name)
        out[name] = (tmp / name).read_bytes()
    return out


@pytest.fixture(scope="module")
def pulled(tmp_path_factory):
    """A folder that already holds an h94 set's VAE, then `--set scoring` pulled into it."""
    tmp = tmp_path_factory.mktemp("scoring")
    write_tiny_clip(tmp / "clip", fast_tokenizer=True)
    _tiny_dino(tmp / "dino")
    files = _state_files(tmp)
    folder = tmp / "w"
    (folder / "sd-vae-ft-mse").mkdir(parents=True)
    (folder / RECORD).write_text(json.dumps({"format": "fmu-weights/1", "set": "h94",
                                             "roles": {"vae": "sd-vae-ft-mse"}}))
    hub = HubStandIn.from_folders({CLIP_L14.repo_id: {"": tmp / "clip"}, DINO.repo_id: {"": tmp / "dino"}},
                                  files=files)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    with hub:
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp / "hf-home"), HF_HUB_DISABLE_XET="1",
                   HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1",
                   PYTHONPATH=str(ROOT))
        env.pop("HF_TOKEN", None)
        # the hub pieces as published (HF_ENDPOINT points at the stand-in); the URL pieces' hosts
        # are swapped for the stand-in's, keeping their file names
        code = f"""
            from dataclasses import replace
            from pathlib import Path
            from fmu.core.weights.pull import pull_pieces
            from fmu.core.weights.sets import SETS, UrlPiece
            pieces = tuple(replace(p, files=tuple(replace(f, url="{hub.url}/files/" + f.name) for f in p.files))
                           if isinstance(p, UrlPiece) else p for p in SETS["scoring"])
            summary = pull_pieces(pieces, Path("{folder}"), "scoring")
            print([(p.name, p.ok, p.detail) for p in summary.pieces])
        """
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                                text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.count("True") == 4, result.stdout + result.stderr
    return tmp, folder, files


def test_scoring_set_lands_byte_identical_beside_the_generate_set(pulled):
    tmp, folder, files = pulled
    roles = roles_of(folder)
    assert roles["clip_model"] == folder / "clip-vit-large-patch14"
    assert roles["dino_model"] == folder / "dino-vits16"
    assert roles["lpips_weights"] == folder / "lpips"
    assert roles["fid_weights"] == folder / "inception" / INCEPTION.files[0].name
    for name in CLIP_L14.patterns:
        assert (roles["clip_model"] / name).read_bytes() == (tmp / "clip" / name).read_bytes(), name
    for name in DINO.patterns:
        assert (roles["dino_model"] / name).read_bytes() == (tmp / "dino" / name).read_bytes(), name
    for name in ("alexnet-owt-7be5be79.pth", "alex.pth"):
        assert (roles["lpips_weights"] / name).read_bytes() == files[name]
    assert roles["fid_weights"].read_bytes() == files[INCEPTION.files[0].name]
    record = json.loads((folder / RECORD).read_text())
    # an add-on: the folder's generate set and its roles stay
    assert record["set"] == "h94" and roles["vae"] == folder / "sd-vae-ft-mse"
    assert record["pieces"]["lpips"]["licence"] == LPIPS.licence


def test_score_weights_runs_every_metric_from_the_folder(pulled, tmp_path, astronaut):
    _, folder, _ = pulled
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.fromarray(astronaut).save(refs / "a.png")
    Image.fromarray(astronaut[:, ::-1]).save(refs / "b.png")
    (refs / "m.csv").write_text("id,reference,prompt\na,a.png,an astronaut\nb,b.png,a mirrored astronaut\n")
    outs = tmp_path / "outs"
    outs.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):  # FID needs two images per set
        Image.fromarray(np.clip(astronaut.astype(int) + rng.integers(-30, 30, astronaut.shape), 0, 255)
                        .astype(np.uint8)).save(outs / f"{name}.png")
    result = invoke("score", "--images", outs, "--manifest", refs / "m.csv", "--weights", folder,
                    "--metrics", "clip,dino,lpips,fid", "--no-report")
    assert result.exit_code == 0, result.output
    metrics = json.loads((outs / "summary.json").read_text())["metrics"]
    for name in ("clip_t", "clip_i", "dino", "lpips", "fid"):
        assert metrics[name]["available"] is True, (name, metrics[name])
    assert metrics["clip_t"]["model"] == str(folder / "clip-vit-large-patch14")
    assert metrics["dino"]["model"] == str(folder / "dino-vits16")
    assert str(folder / "lpips" / "alex.pth") in metrics["lpips"]["model"]
    assert metrics["fid"]["model"] == str(folder / "inception" / INCEPTION.files[0].name)


def test_doctor_names_the_scoring_pull_for_what_is_missing(tmp_path):
    from fmu.core.doctor import diagnose

    folder = tmp_path / "w"
    (folder / "sd-vae-ft-mse").mkdir(parents=True)
    (folder / RECORD).write_text(json.dumps({"format": "fmu-weights/1", "set": "h94",
                                             "roles": {"vae": "sd-vae-ft-mse"}}))
    report = diagnose(weights=str(folder))
    clip = report.find("weights", "score --clip-model")
    assert clip.ok is None and f"fmu weights pull --set scoring --dir {folder}" in clip.detail
    assert {c.name for c in report.failures}.isdisjoint({"score --clip-model", "score --fid-weights"})
