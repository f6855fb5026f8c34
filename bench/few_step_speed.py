"""Few-step sampling on this machine: images/s at 4 LCM steps with a speed LoRA against the authors'
50 DDIM steps, the same model and batch, measured in one run.

    python bench/few_step_speed.py           # the bench preset (mid-size UNet, 128 px), batch 4
    python bench/few_step_speed.py --quick   # CI: the tiny preset, 1 repetition; counts only

Prints images/s of
  ddim-50      DDIM, 50 steps, guidance 7.5 (CFG: two UNet + ShadingNet passes a step)
  lcm-4        LCMScheduler, 4 steps, guidance 1.5, with a speed LoRA (`--speed-lora`)
  lcm-4-g1     the same at guidance 1.0: no unconditional branch, one pass a step
and each one's ratio to ddim-50. The speed LoRA is a stand-in with LCM-LoRA's layer coverage
(attention, feed-forward, resnet convolutions, time embedding) and random weights: what it costs per
step is what a real one costs; what it draws is noise, like everything the presets draw.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkout import use_this_checkout  # noqa: E402  (bench/checkout.py: fmu from this checkout)

use_this_checkout()

from fmu.core.model.facemakeup import FaceMakeUp  # noqa: E402  (after the path: this checkout's fmu)
from fmu.core.model.pipeline import Request  # noqa: E402
from fmu.core.model.presets import SPECS, ensure_preset  # noqa: E402
from fmu.core.model.settings import Settings  # noqa: E402

LCM_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                    "conv1", "conv2", "time_emb_proj"]


def write_speed_lora(base: Path, folder: Path, rank: int = 64) -> Path:
    """A LoRA over the preset UNet's layers that LCM-LoRA covers, in diffusers format."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    rank = min(rank, min(unet.config.block_out_channels))
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=LCM_LORA_TARGETS))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet),
                                              safe_serialization=True)
    return folder


def make_requests(n: int, size: int, id_dim: int) -> list[Request]:
    rng = np.random.default_rng(0)
    return [Request(prompt="a portrait photo of a person, soft light", seed=100 + i,
                    id_embedding=rng.normal(size=id_dim).astype(np.float32),
                    face_crop=rng.integers(0, 255, (112, 112, 3), dtype=np.uint8),
                    condition=rng.integers(0, 255, (size, size), dtype=np.uint8)) for i in range(n)]


def images_per_s(model: FaceMakeUp, reqs: list[Request], settings: Settings, repeats: int) -> float:
    model.generate(reqs, Settings(**{**settings.__dict__, "steps": 1}))  # warm-up
    best = float("inf")
    for _ in range(repeats):  # the fastest of a few: the least disturbed by other jobs on the machine
        start = time.perf_counter()
        model.generate(reqs, settings)
        best = min(best, time.perf_counter() - start)
    return len(reqs) / best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per setting (default 2; quick 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = "tiny" if args.quick else "bench"
    repeats = args.repeats or (1 if args.quick else 2)
    base, adapter = ensure_preset(preset)
    size = SPECS[preset][1]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        lora = write_speed_lora(base, Path(tmp) / "speed")
        ddim = FaceMakeUp.from_pretrained(base, adapter)
        lcm = FaceMakeUp.from_pretrained(base, adapter)
        lcm.set_scheduler("lcm")
        lcm.load_speed_lora(lora)
    reqs = make_requests(args.batch, size, ddim.cfg.id_embed_dim)
    runs = {"ddim-50": (ddim, Settings(steps=50, guidance_scale=7.5, width=size, height=size)),
            "lcm-4": (lcm, Settings(steps=4, guidance_scale=1.5, width=size, height=size)),
            "lcm-4-g1": (lcm, Settings(steps=4, guidance_scale=1.0, width=size, height=size))}
    if args.quick:
        runs = {k: (m, Settings(**{**s.__dict__, "steps": min(s.steps, 4)})) for k, (m, s) in runs.items()}
    rates = {name: images_per_s(model, reqs, settings, repeats) for name, (model, settings) in runs.items()}
    print(f"preset {preset} ({size} px), batch {args.batch}, torch threads {torch.get_num_threads()}, "
          f"best of {repeats}{' (quick: every setting at most 4 steps)' if args.quick else ''}")
    print("| setting | images/s | vs ddim-50 |")
    print("|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.3f} | {rate / rates['ddim-50']:.2f}x |")
    print(f"done in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
