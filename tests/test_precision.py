"""Reduced precision on the CPU: bf16 / fp16 are accepted where torch runs the model's operations,
the whole generate on the demo manifest in bf16 stays within a stated distance of fp32, a VAE
can be kept in fp32, and training steps under bf16 mixed precision give finite losses close to
fp32's. The GPU takes these same code paths: only the kernels differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fmu.core.errors import UsageError
from fmu.core.model.load import resolve_dtype

REPO = Path(__file__).resolve().parents[1]


def test_precisions_on_cpu_are_probed_and_refused_by_name(monkeypatch):
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda:0") == torch.float16    # an accelerator's default; nothing is run
    assert resolve_dtype("auto", "mps") == torch.float16
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16     # this torch's CPU kernels run both
    assert resolve_dtype("fp16", "cpu") == torch.float16
    with pytest.raises(UsageError, match="unknown precision 'fp8'"):
        resolve_dtype("fp8", "cpu")

    def no_half(x, *args, **kwargs):  # what an older CPU build answered
        raise RuntimeError(f'"GroupNormKernelImpl" not implemented for {str(x.dtype)!r}')

    monkeypatch.setattr(F, "group_norm", no_half)
    with pytest.raises(UsageError, match=r"precision fp16 on cpu: .*GroupNormKernelImpl.*not implemented.*use fp32"):
        resolve_dtype("fp16", "cpu")
    assert resolve_dtype("fp32", "cpu") == torch.float32      # fp32 is never probed


def _demo_run(inputs: Path, out: Path, precision: str, steps: int):
    from fmu.core.runner.config import GenerateConfig
    from fmu.core.runner.generate import run_generate

    cfg = GenerateConfig.from_options(inputs / "manifest.csv", out=out, steps=steps, precision=precision, threads=2)
    summary = run_generate(cfg)
    results = pl.read_parquet(out / "results.parquet").sort("id", "k")
    images = {name: np.asarray(Image.open(out / name)).astype(np.float64) for name in results["image"]}
    return summary, results, images


# bf16 keeps 8 significant bits: one rounding moves a value by up to 2^-9 of itself, about 0.25
# grey level at the VAE's output scale (values ±1 -> 0..255). Roundings through 8 denoising steps of
# UNet, ShadingNet and VAE layers add up like a random walk; measured here: 0.5-0.7 grey level mean,
# at most 6. Two unrelated images of these statistics (std ~37) differ by ~40 on average, so
# 2 grey levels separates "the same image, rounded" from any dtype mistake with a wide margin.
BF16_MEAN_TOLERANCE = 2.0
BF16_MAX_TOLERANCE = 32


def test_bf16_generate_on_the_demo_manifest_matches_fp32(tmp_path, tiny_preset):
    from fmu.manifests.demo import write_demo_inputs

    inputs = write_demo_inputs(tmp_path / "inputs").parent
    full, _, full_images = _demo_run(inputs, tmp_path / "fp32", "fp32", steps=8)
    half, half_rows, half_images = _demo_run(inputs, tmp_path / "bf16", "bf16", steps=8)
    assert full.exit_code == half.exit_code == 0
    assert half.ok == half.total == 4 and half_rows["status"].to_list() == ["ok"] * 4
    assert half_images.keys() == full_images.keys()
    for name in full_images:
        diff = np.abs(half_images[name] - full_images[name])
        assert diff.mean() < BF16_MEAN_TOLERANCE and diff.max() <= BF16_MAX_TOLERANCE, (name, diff.mean(), diff.max())
        assert diff.mean() > 0  # bf16 really ran: the roundings show
    info = json.loads((tmp_path / "bf16" / "run.json").read_text())
    assert info["config"]["precision"] == "bf16"


def _requests(n=2):
    from fmu.core.model.pipeline import Request

    rng = np.random.default_rng(0)
    return [Request(prompt="a portrait photo", id_embedding=rng.normal(size=128).astype(np.float32),
                    face_crop=rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), seed=3 + i,
                    condition=(rng.random((64, 64)) * 255).astype(np.uint8)) for i in range(n)]


def test_vae_precision_fp32_decodes_fp32_latents_under_a_half_precision_model(tiny_preset):
    """fp16 UNet / ShadingNet / encoders with the VAE in fp32: the latents reach the VAE as fp32
    and the images are exactly what that fp32 VAE makes of them."""
    from fmu.core.model.facemakeup import FaceMakeUp
    from fmu.core.model.pipeline import Settings

    base, adapter = tiny_preset
    model = FaceMakeUp.from_pretrained(base, adapter, dtype=torch.float16, vae_dtype=torch.float32)
    vae = model.pipe.vae
    assert vae.dtype == torch.float32 and model.unet.dtype == torch.float16
    assert model.shading_net.dtype == model.pipe.text_encoder.dtype == model.pipe.image_encoder.dtype == torch.float16
    seen = []
    decode = vae.decode

    def spy(latents, *args, **kwargs):
        seen.append(latents.clone())
        return decode(latents, *args, **kwargs)

    vae.decode = spy
    images = model.generate(_requests(), Settings(steps=3, width=64, height=64))
    assert len(seen) == 1 and seen[0].dtype == torch.float32
    with torch.no_grad():
        ref = model.pipe.image_processor.postprocess(decode(seen[0]).sample, output_type="np")
    for got, want in zip(images, ref):
        np.testing.assert_array_equal(got, (np.clip(want, 0, 1) * 255).round().astype(np.uint8))


def test_fp16_generate_on_cpu_matches_fp32(tiny_preset):
    from fmu.core.model.facemakeup import FaceMakeUp
    from fmu.core.model.pipeline import Settings

    base, adapter = tiny_preset
    settings = Settings(steps=4, width=64, height=64)
    full = FaceMakeUp.from_pretrained(base, adapter).generate(_requests(), settings)
    half = FaceMakeUp.from_pretrained(base, adapter, dtype=torch.float16).generate(_requests(), settings)
    for a, b in zip(full, half):  # fp16 keeps 11 bits: well within a grey level on average
        diff = np.abs(a.astype(float) - b.astype(float))
        assert diff.mean() < 0.5 and diff.max() <= 8, (diff.mean(), diff.max())


# ----------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def prepared(tmp_path_factory, photos, tiny_preset):
    """Two shipped photos and their mirror images, each with a face mask for the phrase "face"."""
    from fmu.core.faces import get_backend
    from fmu.training.prepare import PrepareConfig, run_prepare

    root = tmp_path_factory.mktemp("precision_train")
    backend, rows = get_backend("dlib"), []
    for name in ("astronaut.png", "tom_hanks.png"):
        image = Image.open(photos[name]).convert("RGB")
        for suffix, variant in {"": image, "_flip": image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)}.items():
            stem = Path(name).stem + suffix
            variant.save(root / f"{stem}.png")
            x1, y1, x2, y2 = (round(v) for v in max(backend.detect(np.asarray(variant)),
                                                          key=lambda f: f.area).bbox)
            mask = np.zeros(np.asarray(variant).shape[:2], np.uint8)
            mask[max(y1, 0):y2, max(x1, 0):x2] = 255
            Image.fromarray(mask).save(root / f"{stem}_mask.png")
            rows.append({"image": f"{stem}.png", "caption": "a photo of a person, face close up",
                         "masks": json.dumps([{"mask": f"{stem}_mask.png", "phrase": "face"}])})
    pl.DataFrame(rows).write_csv(root / "train.csv")
    summary = run_prepare(PrepareConfig(source=root / "train.csv", out=root / "data", resolution=64,
                                        dedupe="exact"))  # the mirrored copies are wanted
    assert summary.ok == 4
    return summary.manifest


def _train(manifest: Path, out: Path, *extra: str) -> list[dict]:
    """`fmu train` in its own process (accelerate fixes the mixed precision once per process)."""
    cmd = [sys.executable, "-m", "fmu.app", "train", "--data", str(manifest), "--out", str(out),
           "--max-steps", "3", "--batch-size", "2", "--checkpoint-every", "0", "--seed", "5", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]


def test_bf16_training_steps_give_finite_losses_close_to_fp32(prepared, tmp_path):
    full = _train(prepared, tmp_path / "fp32")
    half = _train(prepared, tmp_path / "bf16", "--mixed-precision", "bf16")
    assert json.loads((tmp_path / "bf16" / "run.json").read_text())["mixed_precision"] == "bf16"
    assert json.loads((tmp_path / "fp32" / "run.json").read_text())["mixed_precision"] == "no"
    assert [r["step"] for r in half] == [r["step"] for r in full] == [1, 2, 3]
    assert all(np.isfinite(r[term]) for r in half for term in ("loss", "mse", "map", "id")), half
    # the same batches, noise draws and timesteps in both runs: the terms differ by the roundings
    # only. bf16 autocast rounds each matmul's inputs to 8 bits (~0.4 %), and the MSE over a whole
    # latent averages that out: measured 0.03 % at step 1, below 0.5 % by step 3. Another batch or
    # noise draw moves the MSE by 10-30 % (steps 1..3 here), so 1 % tells rounding from a mistake.
    for a, b in zip(full, half):
        for term in ("loss", "mse", "map", "id"):
            assert abs(b[term] - a[term]) <= 0.01 * abs(a[term]) + 1e-4, (term, a, b)
    assert half[0]["mse"] != full[0]["mse"]  # bf16 really ran


def test_fp16_mixed_precision_on_cpu_is_refused_with_the_reason(prepared, tmp_path):
    from fmu.training.config import load_config
    from fmu.training.trainer import run_training

    cfg = load_config(None, dict(data=prepared, out=tmp_path / "fp16", max_steps=1, batch_size=2,
                                 mixed_precision="fp16"))
    with pytest.raises(UsageError, match=r"fp16 needs a GPU .* use bf16 on the CPU"):
        run_training(cfg)
