"""mediapipe's C++ start-up logging stays off stderr; everything else written there survives."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import os, sys
import numpy as np
from PIL import Image
from fmu.core.native_log import quiet_native_stderr
from fmu.core.shading.reconstruct import get_reconstructor

with quiet_native_stderr():
    os.write(2, b"W0000 00:00:1795492002.472161   15411 some_calculator.cc:114] chatter\n")
    os.write(2, b"E0000 00:00:1795492002.472161   15411 real.cc:1] an error stays\n")
    print("python stderr stays", file=sys.stderr)
mesh = get_reconstructor("mediapipe")(np.asarray(Image.open(sys.argv[1]).convert("RGB")))
print(len(mesh.vertices))
"""


def test_mediapipe_chatter_is_dropped_and_other_output_kept(photos):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(photos["astronaut.png"])], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["478"]
    assert done.stderr.splitlines() == ["E0000 00:00:1795492002.472161   15411 real.cc:1] an error stays",
                                        "python stderr stays"]
