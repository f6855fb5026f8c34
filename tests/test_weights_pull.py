"""`fmu weights pull` against a local stand-in for the Hub's file API (tests/hub_standin.py) on
127.0.0.1: files land byte-identical in the layout, `fmu generate --weights DIR` runs on what was
pulled, cut-off downloads resume (HTTP Range), checksums and archives are checked.

huggingface_hub reads HF_HUB_OFFLINE (which conftest sets for every test) when it is imported, so
each pull runs in a subprocess whose environment drops it, points HF_ENDPOINT at the stand-in, and
routes any other host to a dead proxy: nothing can leave the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from fmu.core.model import adapter as A
from fmu.core.weights.layout import RECORD, generate_options, roles_of
from fmu.core.weights.sets import BASE, H94_ADAPTER, IMAGE_ENCODER, VAE

sys.path.insert(0, str(Path(__file__).parent))
from hub_standin import HubStandIn

ROOT = Path(__file__).resolve().parents[1]


def _env(hub: HubStandIn, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp / "hf-home"), HF_HUB_DISABLE_XET="1",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1",
               PYTHONPATH=str(ROOT))
    env.pop("HF_TOKEN", None)
    return env


def _pull(hub, tmp, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fmu.app", "weights", "pull", *map(str, args)],
                          env=_env(hub, tmp), capture_output=True, text=True, timeout=600)


def _script(hub, tmp, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=_env(hub, tmp),
                          capture_output=True, text=True, timeout=600)


def _h94_files(base: Path, folder: Path) -> dict[str, Path]:
    """h94's FaceID-PlusV2 layout for the tiny UNet: `ip-adapter-faceid-plusv2_sd15.bin` (image_proj +
    ip_adapter, no LoRA inside) and its kohya-style `_lora.safetensors`, random weights."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    cfg = A.AdapterConfig(id_embed_dim=128, clip_hidden_dim=32, embed_dims=32, perceiver_heads=1, lora_rank=4)
    g = torch.Generator().manual_seed(5)
    proj = {k: torch.randn(v.shape, generator=g) * 0.2 + (1.0 if "norm" in k and k.endswith("weight") else 0.0)
            for k, v in A.image_proj_template(cfg, 32).items()}
    ip = {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in A.ip_attn_template(unet).items()}
    lora, modules = {}, dict(unet.named_modules())
    for name in unet.attn_processors:
        attn = name[: -len(".processor")]
        for part in ("to_q", "to_k", "to_v", "to_out.0"):
            lin = modules[f"{attn}.{part}"]
            key = "lora_unet_" + f"{attn}.{part}".replace(".", "_")
            lora[key + ".lora_down.weight"] = torch.randn(4, lin.in_features, generator=g) * 0.1
            lora[key + ".lora_up.weight"] = torch.randn(lin.out_features, 4, generator=g) * 0.1
            lora[key + ".alpha"] = torch.tensor(2.0)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"ip-adapter-faceid-plusv2_sd15.bin": folder / "ip.bin",
             "ip-adapter-faceid-plusv2_sd15_lora.safetensors": folder / "lora.safetensors"}
    torch.save({"image_proj": proj, "ip_adapter": ip}, files["ip-adapter-faceid-plusv2_sd15.bin"])
    save_file(lora, files["ip-adapter-faceid-plusv2_sd15_lora.safetensors"])
    return files


@pytest.fixture(scope="module")
def hub_repos(tiny_preset, tmp_path_factory):
    """The tiny preset's components published under the real repo ids fmu pulls from."""
    preset_base, _ = tiny_preset
    h94 = _h94_files(preset_base, tmp_path_factory.mktemp("h94"))
    # an SD1.5 repo as the hub has them: no image encoder inside (the preset carries its own)
    base = tmp_path_factory.mktemp("repo") / "base"
    shutil.copytree(preset_base, base, ignore=shutil.ignore_patterns("image_encoder"))
    index = json.loads((base / "model_index.json").read_text())
    index.pop("image_encoder", None)
    (base / "model_index.json").write_text(json.dumps(index, indent=2))
    return {BASE.repo_id: {"": base}, VAE.repo_id: {"": base / "vae"},
            IMAGE_ENCODER.repo_id: {"models/image_encoder": preset_base / "image_encoder"},
            H94_ADAPTER.repo_id: h94}, base


def test_pull_h94_set_lands_byte_identical_and_generate_runs_on_it(hub_repos, tmp_path, photos):
    repos, base = hub_repos
    weights = tmp_path / "weights"
    with HubStandIn.from_folders(repos) as hub:
        result = _pull(hub, tmp_path, "--set", "h94", "--only", "base,vae,image-encoder,adapter-h94", "--dir", weights)
        assert result.returncode == 0, result.stdout + result.stderr
        # what the allow patterns select, byte for byte
        pulled = sorted(p.relative_to(weights / "realistic-vision-v4").as_posix()
                        for p in (weights / "realistic-vision-v4").rglob("*") if p.is_file())
        expected = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
        assert pulled == expected
        for rel in expected:
            assert (weights / "realistic-vision-v4" / rel).read_bytes() == (base / rel).read_bytes()
        encoder = weights / "ip-adapter" / "models" / "image_encoder" / "model.safetensors"
        assert encoder.read_bytes() == (repos[IMAGE_ENCODER.repo_id]["models/image_encoder"] /
                                        "model.safetensors").read_bytes()
        assert all(host_path.startswith("/") for _, host_path, _ in hub.requests)

        # a second pull finds everything in place: no file is fetched again
        hub.requests.clear()
        again = _pull(hub, tmp_path, "--set", "h94", "--only", "base,vae,image-encoder,adapter-h94", "--dir", weights)
        assert again.returncode == 0, again.stderr
        assert not [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]]

    record = json.loads((weights / RECORD).read_text())
    assert record["set"] == "h94" and record["pieces"]["base"]["repo_id"] == BASE.repo_id
    roles = roles_of(weights)
    assert roles["base_model"] == weights / "realistic-vision-v4"
    assert roles["adapter_lora"] == weights / "ip-adapter-faceid" / "ip-adapter-faceid-plusv2_sd15_lora.safetensors"
    assert "face_models" not in roles   # insightface was not pulled

    # generate on the pulled folder (dlib faces: the insightface pack is not needed then)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id,reference,prompt,width,height\nhanks,{photos['tom_hanks.png']},a portrait,64,64\n")
    out = tmp_path / "run"
    gen = subprocess.run([sys.executable, "-m", "fmu.app", "generate", str(manifest), "--out", str(out),
                          "--weights", str(weights), "--face-backend", "dlib", "--steps", "2"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert gen.returncode == 0, gen.stdout + gen.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["base_model"] == str(weights / "realistic-vision-v4")
    assert run["config"]["vae"] == str(weights / "sd-vae-ft-mse")
    assert run["config"]["image_encoder"] == str(weights / "ip-adapter" / "models" / "image_encoder")
    assert run["config"]["adapter_lora"] == str(roles["adapter_lora"])
    assert run["model"]["adapter_sha256"] == hashlib.sha256(roles["adapter"].read_bytes()).hexdigest()
    assert (out / "images" / "hanks_0.png").is_file()


def test_generate_weights_names_what_is_missing_and_the_command(tmp_path):
    from typer.testing import CliRunner

    from fmu.app import app

    manifest = tmp_path / "m.csv"
    manifest.write_text("id,reference,prompt\na,x.png,p\n")
    empty = CliRunner().invoke(app, ["generate", str(manifest), "--weights", str(tmp_path / "w"), "--out",
                                     str(tmp_path / "o")])
    assert empty.exit_code == 2
    assert "fmu weights pull --set authors --dir" in empty.output and not (tmp_path / "o").exists()
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / RECORD).write_text(json.dumps({"format": "fmu-weights/1", "set": "h94",
                                                     "roles": {"vae": "sd-vae-ft-mse"}}))
    (tmp_path / "w" / "sd-vae-ft-mse").mkdir()
    with pytest.raises(Exception, match="missing base_model, image_encoder, adapter, adapter_lora, face_models; "
                                        r"run `fmu weights pull --set h94 --dir"):
        generate_options(tmp_path / "w")
    assert generate_options(tmp_path / "w", need=["vae"]) == {"vae": tmp_path / "w" / "sd-vae-ft-mse"}


def test_a_cut_off_hub_file_resumes_from_its_partial_part(hub_repos, tmp_path):
    """A pull killed mid-file leaves `<file>.incomplete`; the next pull asks only for the rest
    (Range) and the file ends byte-identical (its sha256 checked against the hub's)."""
    repos, base = hub_repos
    source = (base / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    target = tmp_path / "weights" / "realistic-vision-v4"
    partial = target / "unet" / "diffusion_pytorch_model.safetensors.incomplete"
    partial.parent.mkdir(parents=True, exist_ok=True)
    half = len(source) // 2
    partial.write_bytes(source[:half])
    with HubStandIn.from_folders({BASE.repo_id: repos[BASE.repo_id]}) as hub:
        result = _pull(hub, tmp_path, "--set", "h94", "--only", "base", "--dir", tmp_path / "weights")
        assert result.returncode == 0, result.stderr
        gets = [r for r in hub.requests if r[0] == "GET" and r[1].endswith("unet/diffusion_pytorch_model.safetensors")]
    assert [r[2] for r in gets] == [f"bytes={half}-"]
    assert (target / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == source
    assert not partial.exists()


def test_url_download_resumes_after_a_dropped_connection_and_checks_sha256(tmp_path):
    """Files outside the Hub: the connection drops after 10.5 MiB (one 10 MiB chunk got written),
    huggingface_hub's http_get retries with a Range for the rest; a wrong sha256 is refused."""
    blob = os.urandom(12 * 1024 * 1024)
    cut = 10 * 1024 * 1024 + 512 * 1024
    with HubStandIn({}, files={"blob.bin": blob, "other.bin": b"x" * 1000}, cut={"blob.bin": cut}) as hub:
        result = _script(hub, tmp_path, f"""
            from pathlib import Path
            from fmu.core.weights.pull import PullError, download_file
            from fmu.core.weights.sets import UrlFile
            download_file(UrlFile("blob.bin", "{hub.url}/files/blob.bin", "{hashlib.sha256(blob).hexdigest()}",
                                  {len(blob)}), Path("{tmp_path}/blob.bin"))
            try:
                download_file(UrlFile("other.bin", "{hub.url}/files/other.bin", "0" * 64, 1000),
                              Path("{tmp_path}/other.bin"))
            except PullError as exc:
                print("refused:", exc)
        """)
        assert result.returncode == 0, result.stderr
        ranges = [r[2] for r in hub.requests if r[1] == "/files/blob.bin"]
    assert ranges == [None, f"bytes={10 * 1024 * 1024}-"]
    assert (tmp_path / "blob.bin").read_bytes() == blob
    assert "refused: other.bin: sha256 differs" in result.stdout
    assert not (tmp_path / "other.bin").exists() and not (tmp_path / "other.bin.incomplete").exists()


def test_insightface_pack_unzips_into_the_face_models_layout(tmp_path):
    from fmu.core.faces.insightface_backend import find_pack

    pack = tmp_path / "buffalo_l.zip"
    with zipfile.ZipFile(pack, "w") as zf:
        zf.writestr("det_10g.onnx", b"detector")
        zf.writestr("w600k_r50.onnx", b"recognizer")
    with HubStandIn({}, files={"buffalo_l.zip": pack.read_bytes()}) as hub:
        result = _script(hub, tmp_path, f"""
            from pathlib import Path
            from fmu.core.weights.pull import pull_pieces
            from fmu.core.weights.sets import UrlFile, UrlPiece, BUFFALO_L
            piece = UrlPiece(name="insightface", folder="insightface", unpack="zip", roles=BUFFALO_L.roles,
                             licence="", files=(UrlFile("buffalo_l.zip", "{hub.url}/files/buffalo_l.zip"),))
            summary = pull_pieces((piece,), Path("{tmp_path}/w"), "h94")
            print([(p.name, p.ok, p.detail) for p in summary.pieces])
        """)
    assert result.returncode == 0 and "True" in result.stdout, result.stdout + result.stderr
    face_models = roles_of(tmp_path / "w")["face_models"]
    assert face_models == tmp_path / "w" / "insightface" / "models"
    folder = find_pack(face_models, "buffalo_l")
    assert sorted(p.name for p in folder.iterdir()) == ["det_10g.onnx", "w600k_r50.onnx"]


def test_face_landmarker_lands_where_the_tasks_mesh_reads_it(tmp_path):
    """Piece face-landmarker (both sets): the .task file as downloaded, at the path the Tasks face mesh
    and doctor look in (FMU_HOME/weights/face-landmarker/face_landmarker.task), other roles kept."""
    from fmu.core.weights.sets import ADDONS, FACE_LANDMARKER, SETS

    # every generate set (the scoring add-on is pulled beside one)
    assert all(FACE_LANDMARKER in pieces for name, pieces in SETS.items() if name not in ADDONS)
    bundle = os.urandom(5000)
    home = tmp_path / "home"
    (home / "weights" / "sd-vae-ft-mse").mkdir(parents=True)
    (home / "weights" / RECORD).write_text(json.dumps({"format": "fmu-weights/1", "set": "authors",
                                                       "roles": {"vae": "sd-vae-ft-mse"}}))
    with HubStandIn({}, files={"face_landmarker.task": bundle}) as hub:
        result = _script(hub, tmp_path, f"""
            import os
            from dataclasses import replace
            os.environ["FMU_HOME"] = "{home}"
            from fmu.core.shading.reconstruct import face_landmarker_path
            from fmu.core.weights.layout import default_dir
            from fmu.core.weights.pull import pull_pieces
            from fmu.core.weights.sets import FACE_LANDMARKER, UrlFile
            piece = replace(FACE_LANDMARKER, files=(UrlFile("face_landmarker.task",
                                                            "{hub.url}/files/face_landmarker.task"),))
            summary = pull_pieces((piece,), default_dir(), "authors")
            print([(p.name, p.ok, p.detail) for p in summary.pieces])
            print("reads", face_landmarker_path())
        """)
    assert result.returncode == 0, result.stdout + result.stderr
    target = home / "weights" / "face-landmarker" / "face_landmarker.task"
    assert "('face-landmarker', True, 'face_landmarker.task in face-landmarker/')" in result.stdout
    assert f"reads {target}" in result.stdout and target.read_bytes() == bundle
    assert roles_of(home / "weights") == {"vae": home / "weights" / "sd-vae-ft-mse"}


def test_authors_checkpoint_parts_checked_then_unpacked_or_explained(tmp_path, tiny_preset):
    """The authors' RAR volumes are fetched and checked; with no extractor on PATH the pull says how
    to unpack by hand; once model.bin is unpacked, the next pull converts it into the adapter."""
    parts = {f"model.part{i}.rar": os.urandom(3000 + i) for i in (1, 2)}
    with HubStandIn({}, files=parts) as hub:
        files = ", ".join(f'UrlFile("{n}", "{hub.url}/files/{n}", "{hashlib.sha256(d).hexdigest()}", {len(d)})'
                          for n, d in parts.items())
        code = f"""
            from pathlib import Path
            from fmu.core.weights.pull import pull_pieces
            from fmu.core.weights.sets import AUTHORS_ADAPTER, UrlFile, UrlPiece
            piece = UrlPiece(name="adapter-authors", folder="face-makeup-v2", unpack="rar+convert",
                             roles=AUTHORS_ADAPTER.roles, licence="", files=({files},))
            summary = pull_pieces((piece,), Path("{tmp_path}/w"), "authors")
            print(repr([(p.ok, p.detail) for p in summary.pieces]))
        """
        env_path = {"PATH": str(Path(sys.executable).parent)}   # python, and no unrar / unar / 7z
        first = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                               env={**_env(hub, tmp_path), **env_path}, timeout=600)
        assert first.returncode == 0, first.stderr
        assert "(False, 'the RAR volumes are downloaded but no extractor is installed" in first.stdout
        assert "apt-get install unar" in first.stdout and "fmu convert" in first.stdout
        for name, data in parts.items():
            assert (tmp_path / "w" / "face-makeup-v2" / name).read_bytes() == data
        assert "adapter" not in roles_of(tmp_path / "w")

        # unpacked by hand: the authors' layout for the tiny UNet (image_proj + ip_adapter + controlnet)
        from diffusers import UNet2DConditionModel

        base, _ = tiny_preset
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
        cfg = A.AdapterConfig(id_embed_dim=128, clip_hidden_dim=32, embed_dims=32, perceiver_heads=1, lora_rank=4)
        state = {"image_proj": A.image_proj_template(cfg, 32), "ip_adapter": A.ip_attn_template(unet),
                 "controlnet": A.new_shading_net(unet).state_dict()}
        shutil.copytree(base, tmp_path / "w" / "realistic-vision-v4")   # the base the set pulls first
        (tmp_path / "w" / "face-makeup-v2" / "unpacked" / "ckpt").mkdir(parents=True)
        torch.save(state, tmp_path / "w" / "face-makeup-v2" / "unpacked" / "ckpt" / "model.bin")
        hub.requests.clear()
        second = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                                env={**_env(hub, tmp_path), **env_path}, timeout=600)
        assert second.returncode == 0, second.stderr
        assert "(True, 'unpacked/ckpt/model.bin converted" in second.stdout
        assert not hub.requests   # the checked volumes were not fetched again
    adapter = roles_of(tmp_path / "w")["adapter"]
    tensors, meta = A.read_adapter(adapter)
    assert "shading_config" in meta and any(k.startswith("shading.") for k in tensors)


def test_doctor_points_at_weights_pull_for_what_is_missing(tmp_path, fmu_home):
    from fmu.core.doctor import diagnose

    report = diagnose()
    row = next(c for c in report.checks if c.area == "weights" and c.name.startswith("pulled weights"))
    assert row.ok is None and "`fmu weights pull --set authors`" in row.detail   # the default folder: information
    buffalo = report.find("faces", "insightface buffalo_l")
    assert buffalo.ok is False and "fmu weights pull --set authors --only insightface" in buffalo.detail

    folder = tmp_path / "w"
    (folder / "sd-vae-ft-mse").mkdir(parents=True)
    (folder / RECORD).write_text(json.dumps({"format": "fmu-weights/1", "set": "h94",
                                             "roles": {"vae": "sd-vae-ft-mse"}}))
    report = diagnose(weights=str(folder))
    assert report.exit_code == 1
    missing = {c.name: c for c in report.failures}
    assert set(missing) == {"--base-model", "--image-encoder", "--adapter", "--adapter-lora", "--face-models"}
    assert f"fmu weights pull --set h94 --dir {folder}" in missing["--adapter"].detail
    assert report.find("weights", "--vae").ok is True
