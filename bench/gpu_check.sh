#!/usr/bin/env bash
# README's GPU table in one run on one H100/H200-class GPU, in under 8 minutes:
#   bash bench/gpu_check.sh [TABLE]      (default TABLE: $OUT/gpu_table.md when $OUT is set, else ./gpu_table.md)
#
# What the GPU machine needs: python with torch (CUDA), transformers, peft and accelerate. diffusers (and
# Pillow / requests, which diffusers imports, if that python lacks them) travel as wheels in wheels/,
# fetched on a machine with network access:
#   pip download diffusers==0.42.1 --no-deps -d wheels/
#   pip download pillow --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 -d wheels/            # only if `import PIL` fails there
#   pip download requests urllib3 idna certifi charset-normalizer --no-deps -d wheels/   # if `import requests` fails
# and installed there from wheels/ only (this script does it when an import is missing):
#   pip install --no-index --no-deps wheels/*.whl
# wheels/ is git-ignored (never committed): copy it along with the checkout.
#
# Budget (H200, about 790 TFLOP/s bf16 dense): ~30 s to build the full-size model with random weights on
# the GPU, ~15 s to count FLOPs, then fp16 and bf16 x batch 1/4/8/16 x (fmu, diffusers' pipeline), each
# timed at 4 and 12 steps and extrapolated to 50 (bench/gpu_model.py says how), ~2 min; then the compiled
# UNet + ShadingNet at batch 8 in both precisions, ~3 min of compilation. --budget-s 400 makes
# gpu_model.py start nothing new after 400 s (the table lists what it skipped); the timeout is the backstop.
set -euo pipefail
cd "$(dirname "$0")/.."
TABLE="${1:-${OUT:-.}/gpu_table.md}"
PY="${PYTHON:-python}"

missing=$("$PY" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("torch", "transformers", "peft", "accelerate", "diffusers", "PIL", "requests")
               if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
    echo "missing: $missing; installing from wheels/"
    ls wheels/*.whl >/dev/null 2>&1 || { echo "no wheels/*.whl: see the header of $0" >&2; exit 2; }
    "$PY" -m pip install --no-index --no-deps wheels/*.whl
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print(torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
timeout 470 "$PY" bench/gpu_model.py --device cuda --compile --budget-s 400 --out "$TABLE"
echo "table: $TABLE (raw figures: ${TABLE%.md}.json)"
