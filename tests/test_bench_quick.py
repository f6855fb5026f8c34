"""The bench scripts' short modes run in CI: they assert counts and correctness, never times."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["generate_scale.py", "shading_speed.py", "score_speed.py", "mask_speed.py",
                                    "cli_start.py", "gpu_model.py", "few_step_speed.py"])
def test_bench_quick_mode(script, fmu_home):
    env = {**os.environ, "FMU_HOME": str(fmu_home)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.strip(), "a bench prints its figures"
