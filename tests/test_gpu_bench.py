"""bench/gpu_model.py: runs with only what the GPU machine has (torch, diffusers, transformers, peft,
fmu's core/model), and its FLOP count is the model's own (a recount of one noise prediction)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "gpu_model.py"
# what the GPU machine lacks (fmu's other dependencies) and fmu's own layers above core/model
BLOCKED = ("polars", "dlib", "mediapipe", "typer", "rich", "onnx", "onnxruntime", "insightface", "cv2", "skimage",
           "face_recognition_models", "tensorboard")

# Every import finder is wrapped so that the blocked packages are not found: `import x` fails and
# `importlib.util.find_spec("x")` is None, exactly as on a machine where they are not installed.
GUARD = """
import json, runpy, sys
BLOCKED = set({blocked!r})

class Hide:
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED or not hasattr(self.inner, "find_spec"):
            return None
        return self.inner.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

sys.meta_path[:] = [Hide(finder) for finder in sys.meta_path]
sys.argv = [{bench!r}, "--quick", "--out", {out!r}]
try:
    runpy.run_path({bench!r}, run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
with open({modules!r}, "w") as fh:
    json.dump(sorted(m for m in sys.modules if m == "fmu" or m.startswith("fmu.")), fh)
"""


def test_quick_mode_runs_with_only_the_gpu_machines_libraries(tmp_path):
    out, modules = tmp_path / "table.md", tmp_path / "modules.json"
    code = GUARD.format(blocked=BLOCKED, bench=str(BENCH), out=str(out), modules=str(modules))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "| fmu | bf16 | no | 2 |" in done.stdout and "| stock | bf16 | no | 2 |" in done.stdout
    loaded = json.loads(modules.read_text())
    # fmu's model and the core utilities it stands on (core/*.py), nothing from the layers above or beside it
    beside = [m for m in loaded if not (m in ("fmu", "fmu.core") or m.startswith("fmu.core.model") or
                                        (m.count(".") == 2 and (ROOT / "core" / f"{m[9:]}.py").is_file()))]
    assert "fmu.core.model.facemakeup" in loaded and beside == [], loaded
    table = out.read_text()
    assert "Toy sizes (--quick)" in table and table.count("| fmu |") == table.count("| stock |") == 2
    raw = json.loads(out.with_suffix(".json").read_text())
    for kind in ("fmu", "stock"):
        f = raw["flops"][kind]
        assert f["per_step"] > 0 and f["per_image"] == f["fixed"] + 50 * f["per_step"]
    # fmu's ShadingNet attends to 4 ID tokens, the stock ControlNet to 77 text tokens: more per step
    assert raw["flops"]["stock"]["per_step"] > raw["flops"]["fmu"]["per_step"]
    for row in raw["rows"]:  # achieved = FLOPs per image x images/s; fraction = achieved / measured peak
        achieved = raw["flops"][row["pipeline"]]["per_image"] * row["images_per_s"] / 1e12
        assert row["images_per_s"] > 0 and row["achieved_tflops"] == pytest.approx(achieved, rel=1e-12)
        assert row["of_measured_peak"] == pytest.approx(achieved / raw["peak_tflops"]["bf16"], rel=1e-12)


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_gpu_model", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_flops_per_step_are_one_noise_prediction_recounted(tmp_path):
    """The bench's per-step FLOPs (the difference of whole generate runs at 2 and 1 steps) equal a
    direct count of one CFG noise prediction (UNet + ShadingNet on a batch of 2) by the same counter;
    and per-image = fixed + steps × per-step."""
    from torch.utils.flop_counter import FlopCounterMode

    G = _bench_module()
    model, _ = G.build(G.TOY, "cpu", tmp_path)
    flops = G.count_flops(lambda r, s: G.fmu_run(model, r, s), G.TOY, steps=50)
    (req,) = G.requests(1, G.TOY)
    size = G.TOY.size
    with torch.no_grad():
        ids = torch.from_numpy(np.stack([np.zeros_like(req.id_embedding), req.id_embedding]))
        clip = torch.randn(2, (32 // 8) ** 2 + 1, G.TOY.vision["hidden_size"])
        added = model.identity_inputs(ids, clip, 0.7)
        tokens = model.id_tokens(added)
        latents = torch.randn(2, 4, size // 8, size // 8)
        text = torch.randn(2, 77, G.TOY.unet["cross_attention_dim"])
        control = torch.rand(2, 3, size, size)
        with FlopCounterMode(display=False) as counter:
            model.predict_noise(latents, torch.tensor(500), text, added, control, 0.5, tokens)
    assert flops["per_step"] == counter.get_total_flops() > 0
    assert flops["per_image"] == flops["fixed"] + 50 * flops["per_step"] and flops["fixed"] > 0
