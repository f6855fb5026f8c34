"""CI: the install README documents ends with exactly one onnxruntime flavour and one OpenCV.

For each extra (cpu, gpu), pip resolves `pip install -e ".[EXTRA]"` without installing anything
(`--dry-run --ignore-installed --report`: the full set a fresh environment would get), and the
second step `pip install --no-deps insightface` is resolved too (it must add insightface alone).
Fails when a report holds two onnxruntime flavours (they write the same `onnxruntime` module), the
wrong one, or more than one distribution providing `cv2`. Needs pip >= 22.2 and PyPI (CI has both);
nothing is installed or downloaded beyond package metadata.

    python .ci/check_extras.py [--pip PATH_TO_PYTHON]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORT = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}
OPENCV = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}
INSIGHTFACE = "insightface>=0.7.3"   # as the Makefile's INSIGHTFACE


def resolve(python: str, *requirements: str, no_deps: bool = False) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
               *(["--no-deps"] if no_deps else []), *requirements]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"pip could not resolve {' '.join(requirements)}:\n{proc.stderr[-3000:]}")
        data = json.loads(report.read_text())
    return sorted(item["metadata"]["name"].lower().replace("_", "-") for item in data["install"])


def check(extra: str, names: list[str], second_step: list[str]) -> list[str]:
    problems = []
    flavours = [n for n in names if n.startswith("onnxruntime")]
    if flavours != [ORT[extra]]:
        problems.append(f".[{extra}]: onnxruntime flavours {flavours}, expected exactly [{ORT[extra]!r}]")
    opencv = [n for n in names if n in OPENCV]
    if len(opencv) != 1:
        problems.append(f".[{extra}]: {len(opencv)} distributions provide cv2: {opencv}")
    if "insightface" in names:
        problems.append(f".[{extra}]: insightface is resolved with its requirements (onnxruntime, opencv-python)")
    if second_step != ["insightface"]:
        problems.append(f"pip install --no-deps {INSIGHTFACE} would install {second_step}, not insightface alone")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable, help="the Python whose pip resolves (pip >= 22.2)")
    args = parser.parse_args(argv)
    with ThreadPoolExecutor(3) as pool:  # the three resolutions are independent: run them side by side
        jobs = {extra: pool.submit(resolve, args.python, "-e", f".[{extra}]") for extra in ORT}
        second = pool.submit(resolve, args.python, INSIGHTFACE, no_deps=True)
        reports = {extra: job.result() for extra, job in jobs.items()}
        second_step = second.result()
    problems = []
    for extra, names in reports.items():
        flavours = [n for n in names if n.startswith("onnxruntime")]
        opencv = [n for n in names if n in OPENCV]
        print(f".[{extra}]: {len(names)} distributions; onnxruntime: {flavours}; OpenCV: {opencv}")
        problems += check(extra, names, second_step)
    print(f"second step (--no-deps): {second_step}")
    for problem in problems:
        print(f"FAIL {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
