"""Face-MakeUpV2 at full size on one GPU: throughput, FLOPs and the fraction of the device's peak,
measured in one run, against diffusers' own ControlNet + IP-Adapter pipeline on the same weights.

    python bench/gpu_model.py --device cuda --compile --out gpu_table.md   # what bench/gpu_check.sh runs
    python bench/gpu_model.py --quick                                      # CI: toy sizes on the CPU

The model is the real architecture with random weights, built from the published component configs
(nothing is downloaded): the SD1.5 UNet, the SD VAE, the CLIP ViT-L/14 text encoder, a CLIP ViT-H/14
image encoder, the FaceID-PlusV2 projection + IP attention + rank-128 identity LoRA (fmu's own
`FaceMakeUp.from_pipe`), and the ShadingNet (`ControlNetModel.from_unet`). The work is the
authors' demo: 512², 50 DDIM steps, CFG 7.5, ShadingNet on. Weights do not change the time an
operation takes, so random ones measure what trained ones would.

Prints (and writes to --out as markdown, with the raw numbers as JSON next to it):
  images/s    `FaceMakeUp.generate` (text + CLIP face encoding + denoising + VAE decode) at each batch
              size and precision, eager and (--compile) with the UNet and ShadingNet compiled
  vs stock    the same for diffusers' `StableDiffusionControlNetPipeline` with the FaceID-Plus
              IP-Adapter on the same modules, as fmu ÷ stock. Not the same computation in one
              respect: the stock ControlNet cross-attends to the 77 text tokens, fmu's ShadingNet to
              the 4 ID tokens (the method's design); its CLIP face encoding is timed with it
  FLOPs       model FLOPs per image (torch.utils.flop_counter, counted once per pipeline)
  peak        the device's dense matmul peak measured here (large bf16 / fp16 matmuls) and, when
              the name is known, the datasheet figure; achieved = FLOPs/image × images/s ÷ peak

Timing: every figure comes from this run. A 50-step image is timed as two runs of S1 and S2 steps
(default 4 and 12): time = fixed + steps × per-step, both measured, extrapolated to --steps
(--full-steps times the real 50). `--budget-s` stops starting new measurements when the time is
spent and says which were skipped. Imports: torch, diffusers, transformers, peft and fmu's
core/model only, so it runs on a bare GPU machine (see bench/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkout import use_this_checkout  # noqa: E402  (bench/checkout.py: fmu from this checkout)

use_this_checkout()

from diffusers import (  # noqa: E402  (after the path: fmu's core is imported from this checkout)
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from transformers import (  # noqa: E402
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)
from transformers.utils import logging as transformers_logging  # noqa: E402

from fmu.core.devices import synchronize  # noqa: E402
from fmu.core.model import adapter as A  # noqa: E402
from fmu.core.model.facemakeup import FaceMakeUp  # noqa: E402
from fmu.core.model.pipeline import DEFAULT_NEGATIVE, Request  # noqa: E402
from fmu.core.model.settings import Settings  # noqa: E402
from fmu.core.model.tiny_tokenizer import write_tiny_tokenizer_files  # noqa: E402

# --- the published component configs (stable-diffusion-v1-5 unet/ vae/ text_encoder/ config.json,
# h94/IP-Adapter models/image_encoder/config.json, the FaceID-PlusV2 projection) ---------------------
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=512, block_out_channels=(128, 256, 512, 512),
    layers_per_block=2, norm_num_groups=32, act_fn="silu", scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
CLIP_L_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                   projection_dim=768)
CLIP_H_VISION = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                     patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5)
FACEID_PLUSV2 = dict(id_embed_dim=512, clip_hidden_dim=1280, embed_dims=768, perceiver_heads=12, lora_rank=128)
SD_DDIM = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
               clip_sample=False, set_alpha_to_one=False, steps_offset=1)

# --quick: the same builders at toy size (CPU in CI)
TOY_UNET = dict(SD15_UNET, sample_size=8, block_out_channels=(32, 32, 64, 64), norm_num_groups=8,
                cross_attention_dim=64, attention_head_dim=2, layers_per_block=1)
TOY_VAE = dict(SD_VAE, sample_size=64, block_out_channels=(8, 16, 16, 16), norm_num_groups=8, layers_per_block=1)
TOY_TEXT = dict(CLIP_L_TEXT, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                projection_dim=64)
TOY_VISION = dict(CLIP_H_VISION, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  patch_size=8, image_size=32, projection_dim=32)
TOY_FACEID = dict(FACEID_PLUSV2, clip_hidden_dim=64, embed_dims=64, perceiver_heads=1, lora_rank=4)

# dense (no sparsity) datasheet peaks in TFLOP/s, bf16 = fp16 on these parts; matched by name
DATASHEET_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "RTX 4090": 165.0, "RTX 3090": 71.0}


@dataclass
class Scale:
    size: int            # image side
    unet: dict
    vae: dict
    text: dict
    vision: dict
    faceid: dict


FULL = Scale(512, SD15_UNET, SD_VAE, CLIP_L_TEXT, CLIP_H_VISION, FACEID_PLUSV2)
TOY = Scale(64, TOY_UNET, TOY_VAE, TOY_TEXT, TOY_VISION, TOY_FACEID)


def build(scale: Scale, device: str, workdir: Path) -> tuple[FaceMakeUp, StableDiffusionControlNetPipeline]:
    """fmu's model and the stock pipeline over the very same modules, in fp32 on `device`."""
    torch.manual_seed(0)
    vocab, merges = write_tiny_tokenizer_files(workdir / "tokenizer")  # padding to 77 makes the text cost real
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
    with torch.device(device):  # random init on the device: seconds instead of minutes on a CPU
        unet = UNet2DConditionModel(**scale.unet)
        vae = AutoencoderKL(**scale.vae)
        text = CLIPTextModel(CLIPTextConfig(**scale.text, bos_token_id=tokenizer.bos_token_id,
                                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
        vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**scale.vision))
    side = scale.vision["image_size"]
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(**SD_DDIM),
        safety_checker=None, feature_extractor=CLIPImageProcessor(size={"shortest_edge": side},
                                                                  crop_size={"height": side, "width": side}),
        image_encoder=vision, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    with torch.device(device):
        model = FaceMakeUp.from_pipe(pipe, A.AdapterConfig(**scale.faceid, shading=True), device=device)
    model.pipe.to(device)
    stock = StableDiffusionControlNetPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=model.unet, controlnet=model.shading_net,
        scheduler=pipe.scheduler, safety_checker=None, feature_extractor=pipe.feature_extractor,
        image_encoder=vision, requires_safety_checker=False)
    stock.set_progress_bar_config(disable=True)
    return model, stock


def set_dtype(model: FaceMakeUp, dtype: torch.dtype) -> None:
    for module in (model.unet, model.shading_net, model.pipe.vae, model.pipe.text_encoder, model.pipe.image_encoder):
        module.to(dtype=dtype)
    model.dtype = dtype


def requests(n: int, scale: Scale, seed: int = 0) -> list[Request]:
    rng = np.random.default_rng(seed)
    return [Request(prompt="a portrait photo of a person in a garden, soft light",
                    id_embedding=rng.normal(size=scale.faceid["id_embed_dim"]).astype(np.float32),
                    face_crop=rng.integers(0, 255, (224, 224, 3), dtype=np.uint8), seed=seed + i,
                    condition=rng.integers(0, 255, (scale.size, scale.size), dtype=np.uint8))
            for i in range(n)]


def settings(scale: Scale, steps: int) -> Settings:
    return Settings(steps=steps, guidance_scale=7.5, id_scale=0.5, s_scale=0.7, shading_scale=0.5,
                    width=scale.size, height=scale.size)


def fmu_run(model: FaceMakeUp, reqs: list[Request], sett: Settings) -> None:
    model.generate(reqs, sett)


def stock_run(model: FaceMakeUp, stock, reqs: list[Request], sett: Settings) -> None:
    """diffusers' documented FaceID-PlusV2 use: the ID embedding as `ip_adapter_image_embeds` (zeros
    for the unconditional half), the face crops' CLIP states set on the projection, the shading
    render as the ControlNet image; the same modules, scales and sampler as fmu. The pipeline repeats
    one ID embedding over its batch (it takes no per-prompt embeddings), so the batch shares the first
    request's identity: the same shapes and work as distinct ones."""
    device, dtype, n = model.device, model.dtype, len(reqs)
    with torch.no_grad():
        clip_cond, clip_uncond = stock.encode_image([r.face_crop for r in reqs], device, 1, output_hidden_states=True)
    proj = A.image_projection(model.unet)
    proj.clip_embeds = torch.cat([clip_uncond, clip_cond]).unsqueeze(1).to(dtype)
    proj.shortcut, proj.shortcut_scale = True, sett.s_scale
    ids = torch.from_numpy(reqs[0].id_embedding[None]).to(device, dtype)
    id_embeds = torch.cat([torch.zeros_like(ids), ids]).unsqueeze(1)   # (2, 1, D): negative, positive
    stock.set_ip_adapter_scale(sett.id_scale)
    cond = torch.from_numpy(np.stack([np.repeat(r.condition[None], 3, 0) for r in reqs])).float() / 255.0
    stock(prompt=[r.prompt for r in reqs], negative_prompt=[DEFAULT_NEGATIVE] * n, image=cond.to(device, dtype),
          ip_adapter_image_embeds=[id_embeds], num_inference_steps=sett.steps, guidance_scale=sett.guidance_scale,
          controlnet_conditioning_scale=sett.shading_scale, height=sett.height, width=sett.width,
          generator=[torch.Generator("cpu").manual_seed(r.seed) for r in reqs], output_type="np")


def count_flops(run, scale: Scale, steps: int) -> dict:
    """FLOPs of one image: the pipeline counted at 1 and 2 steps (batch 1); per step = the
    difference, fixed = text + CLIP face + VAE decode; per image = fixed + steps × per step."""
    counts = []
    for s in (1, 2):
        with FlopCounterMode(display=False) as counter:
            run(requests(1, scale), settings(scale, s))
        counts.append(counter.get_total_flops())
    per_step = counts[1] - counts[0]
    fixed = counts[0] - per_step
    return {"per_step": per_step, "fixed": fixed, "per_image": fixed + steps * per_step}


def timed(run, device: str, reqs, sett) -> float:
    synchronize(device)
    start = time.perf_counter()
    run(reqs, sett)
    synchronize(device)
    return time.perf_counter() - start


def measure(run, device: str, scale: Scale, batch: int, steps: int, short: int, long: int, full: bool) -> dict:
    """Seconds for one batch of `steps`-step images, after a warm-up at this batch size."""
    reqs = requests(batch, scale, seed=batch)
    timed(run, device, reqs, settings(scale, 2))  # warm-up: kernels, allocator, autotuning, compilation
    if full:
        seconds = timed(run, device, reqs, settings(scale, steps))
        return {"seconds": seconds, "per_step": None, "fixed": None, "timed_steps": [steps]}
    t_short = timed(run, device, reqs, settings(scale, short))
    t_long = timed(run, device, reqs, settings(scale, long))
    per_step = max(t_long - t_short, 0.0) / (long - short)
    fixed = max(t_short - short * per_step, 0.0)
    return {"seconds": fixed + steps * per_step, "per_step": per_step, "fixed": fixed, "timed_steps": [short, long]}


def measure_peak(device: str, dtype: torch.dtype, n: int, reps: int) -> float:
    """Dense matmul TFLOP/s of this device in `dtype` (an n×n×n matmul, repeated)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def device_name(device: str) -> str:
    kind = device.split(":")[0]
    if kind == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    if kind == "xpu":
        return torch.xpu.get_device_name(torch.device(device))
    return kind


def datasheet_peak(name: str) -> float | None:
    for key, tflops in DATASHEET_TFLOPS.items():
        if key.lower() in name.lower():
            return tflops
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="toy sizes on the CPU (CI): counts and ratios, no goal")
    ap.add_argument("--device", default=None, help="default: cuda when torch sees one, else cpu")
    ap.add_argument("--batches", default=None, help="comma list (default 1,4,8,16; quick 1,2)")
    ap.add_argument("--precisions", default=None, help="comma list of fp16, bf16, fp32 (default fp16,bf16; "
                                                       "quick bf16)")
    ap.add_argument("--steps", type=int, default=50, help="denoising steps of the figures (the authors' 50)")
    ap.add_argument("--timed-steps", default="4,12", help="the two step counts timed (S1,S2)")
    ap.add_argument("--full-steps", action="store_true", help="time the real --steps instead of extrapolating")
    ap.add_argument("--compile", action="store_true", help="also fmu with the UNet and ShadingNet compiled")
    ap.add_argument("--compile-batch", type=int, default=8, help="the batch size the compiled model is timed at")
    ap.add_argument("--budget-s", type=float, default=None, help="start no measurement after this many seconds")
    ap.add_argument("--compile-reserve-s", type=float, default=150.0,
                    help="with --budget-s: start a compiled run only with this much time left")
    ap.add_argument("--out", type=Path, default=None, help="write the table (markdown) and NAME.json here")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    scale = TOY if args.quick else FULL
    batches = [int(b) for b in (args.batches or ("1,2" if args.quick else "1,4,8,16")).split(",")]
    precisions = (args.precisions or ("bf16" if args.quick else "fp16,bf16")).split(",")
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    short, long = (int(s) for s in args.timed_steps.split(","))
    if args.quick:
        short, long = 1, 2
        torch.set_num_threads(1)  # CI's small shared CPU: one thread wastes the least on a toy model
    warnings.filterwarnings("ignore")  # random-weight VAE outputs and library notices are not the subject
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    name = device_name(device)
    size = "toy sizes (--quick)" if args.quick else "full size"
    print(f"device {device} ({name}); torch {torch.__version__}; {size}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model, stock = build(scale, device, Path(tmp))
        params = {k: sum(p.numel() for p in m.parameters()) for k, m in
                  {"unet (+IP, LoRA)": model.unet, "shading_net": model.shading_net, "vae": model.pipe.vae,
                   "text_encoder": model.pipe.text_encoder, "image_encoder": model.pipe.image_encoder}.items()}
        print(f"built in {time.perf_counter() - t0:.1f}s; parameters: "
              + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in params.items()), flush=True)

        def over_budget(reserve: float = 0.0) -> bool:
            return args.budget_s is not None and time.perf_counter() - started + reserve > args.budget_s

        def write(final: bool) -> str:  # after every row: a run cut short still leaves its table
            table = format_table(rows, flops, peaks, sheet, name, args, short, long, skipped)
            if args.out is not None:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(table if final else table + "\n(incomplete: the run is still going)\n")
                args.out.with_suffix(".json").write_text(json.dumps(
                    {"device": device, "device_name": name, "torch": torch.__version__, "quick": args.quick,
                     "steps": args.steps, "timed_steps": [args.steps] if args.full_steps else [short, long],
                     "flops": flops, "peak_tflops": peaks, "datasheet_tflops": sheet, "rows": rows,
                     "skipped": skipped, "parameters": params, "scale": asdict(scale), "final": final,
                     "wall_seconds": time.perf_counter() - started}, indent=1, default=str))
            return table

        runs = {"fmu": lambda r, s: fmu_run(model, r, s), "stock": lambda r, s: stock_run(model, stock, r, s)}
        set_dtype(model, dtypes[precisions[-1]])
        flops = {k: count_flops(run, scale, args.steps) for k, run in runs.items()}
        for k, f in flops.items():
            print(f"FLOPs per image ({k}): {f['per_image'] / 1e12:.3f} TFLOP ({args.steps} steps × "
                  f"{f['per_step'] / 1e12:.4f} + {f['fixed'] / 1e12:.4f} fixed)", flush=True)

        n_peak, reps = (512, 5) if args.quick else (8192, 20)
        peaks = {p: measure_peak(device, dtypes[p], n_peak, reps) for p in precisions}
        sheet = datasheet_peak(name) if device.startswith("cuda") else None
        print("measured matmul peak: " + ", ".join(f"{p} {v:.1f} TFLOP/s" for p, v in peaks.items())
              + (f"; datasheet {sheet:.0f} TFLOP/s dense" if sheet else ""), flush=True)

        rows, skipped = [], []
        plan = [(p, b, k, False) for p in precisions for b in batches for k in runs]
        if args.compile:
            plan += [(p, args.compile_batch, "fmu", True) for p in precisions]
        compiled = False
        for precision, batch, kind, comp in plan:
            # each precision compiles anew (minutes): started only with --compile-reserve-s left
            if over_budget(args.compile_reserve_s if comp else 0.0):
                skipped.append(f"{kind} {precision} batch {batch}{' compiled' if comp else ''}")
                continue
            set_dtype(model, dtypes[precision])
            if comp and not compiled:
                model.unet.compile()
                model.shading_net.compile()
                compiled = True
            result = measure(runs[kind], device, scale, batch, args.steps, short, long, args.full_steps)
            ips = batch / result["seconds"]
            achieved = flops[kind]["per_image"] * ips / 1e12
            rows.append({"pipeline": kind, "precision": precision, "compiled": comp, "batch": batch,
                         "images_per_s": ips, "achieved_tflops": achieved,
                         "of_measured_peak": achieved / peaks[precision],
                         "of_datasheet_peak": achieved / sheet if sheet else None, **result})
            print(f"  {kind:5s} {precision} batch {batch:2d}{' compiled' if comp else ''}: {ips:.3f} images/s, "
                  f"{achieved:.1f} TFLOP/s ({achieved / peaks[precision]:.0%} of measured peak)", flush=True)
            write(final=False)

        print(write(final=True))
    print(f"done in {time.perf_counter() - started:.1f}s")
    return 0


def format_table(rows, flops, peaks, sheet, name, args, short, long, skipped) -> str:
    stock = {(r["precision"], r["batch"]): r["images_per_s"] for r in rows if r["pipeline"] == "stock"}
    eager = {(r["precision"], r["batch"]): r["images_per_s"] for r in rows
             if r["pipeline"] == "fmu" and not r["compiled"]}
    how = (f"{args.steps} steps timed directly" if args.full_steps else
           f"{args.steps}-step time = fixed + {args.steps} × per-step, from timed runs of {short} and {long} steps")
    lines = [f"Device: {name}. {'Toy sizes (--quick): not a measurement of the model. ' if args.quick else ''}"
             f"512² (quick: 64²), DDIM, CFG 7.5, ShadingNet on; {how}.",
             f"FLOPs per image: fmu {flops['fmu']['per_image'] / 1e12:.2f} TFLOP, stock "
             f"{flops['stock']['per_image'] / 1e12:.2f} TFLOP. Measured matmul peak: "
             + ", ".join(f"{p} {v:.0f} TFLOP/s" for p, v in peaks.items())
             + (f"; datasheet {sheet:.0f}." if sheet else "."), "",
             "| pipeline | precision | compiled | batch | images/s | fmu ÷ stock | vs eager | TFLOP/s "
             "| of measured peak |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        key = (r["precision"], r["batch"])
        # fmu ÷ stock compares like with like (both eager); a compiled row is compared with eager fmu
        ratio = f"{r['images_per_s'] / stock[key]:.2f}×" if r["pipeline"] == "fmu" and not r["compiled"] \
            and key in stock else ""
        vs_eager = f"{r['images_per_s'] / eager[key]:.2f}×" if r["compiled"] and key in eager else ""
        lines.append(f"| {r['pipeline']} | {r['precision']} | {'yes' if r['compiled'] else 'no'} | {r['batch']} | "
                     f"{r['images_per_s']:.3f} | {ratio} | {vs_eager} | {r['achieved_tflops']:.1f} | "
                     f"{r['of_measured_peak']:.1%} |")
    if skipped:
        lines += ["", f"Not measured (--budget-s {args.budget_s:g} spent): " + "; ".join(skipped)]
    if math.isfinite(sum(r["images_per_s"] for r in rows)) is False:
        lines.append("warning: a timing was not finite")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
