"""CI: the install README documents resolves on every Python fmu claims, and ends with exactly one
onnxruntime flavour and one OpenCV.

For each extra (cpu, gpu) and each Python of PYTHONS, pip resolves fmu's requirements for that
Python without installing anything (`--dry-run --ignore-installed --report`: the full set a fresh
environment would get) as a Linux x86_64 machine would (`--python-version`, `--platform`, binary
wheels only: `--only-binary=:all:`). The requirements are pyproject's, with their environment markers
evaluated for that Python (pip evaluates markers for the interpreter it runs on, not for
--python-version), so each Python gets the mediapipe its markers select. The second step
`pip install --no-deps insightface` is resolved too (it must add insightface alone).
Fails when a resolution fails, a report holds two onnxruntime flavours (they write the same
`onnxruntime` module), the wrong one, or more than one distribution providing `cv2`, or when
requires-python or the classifiers disagree with PYTHONS. Needs pip >= 22.2 and PyPI (CI has both);
nothing is installed or downloaded beyond package metadata.

    python .ci/check_extras.py [--python PATH_TO_PYTHON] [--versions 3.11,3.14]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
ORT = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}
OPENCV = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}
INSIGHTFACE = "insightface>=0.7.3"   # as the Makefile's INSIGHTFACE
PYTHONS = ("3.11", "3.12", "3.13", "3.14")   # what README and pyproject claim
# pip takes --platform literally (no older manylinux implied): every glibc tag up to 2.28 (torch's), and the
# legacy aliases (manylinux1 = 2_5, 2010 = 2_12, 2014 = 2_17) that older wheels carry alone
GLIBC_TAGS = [f"manylinux_2_{minor}_x86_64" for minor in range(5, 29)] + [
    f"manylinux{alias}_x86_64" for alias in ("1", "2010", "2014")]
PLATFORM = [arg for tag in GLIBC_TAGS for arg in ("--platform", tag)] + ["--only-binary=:all:"]


def requirements(extra: str, python: str, project: dict | None = None) -> list[str]:
    """pyproject's requirements plus the extra's, markers evaluated for CPython `python` on Linux x86_64."""
    project = project or tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": extra}
    chosen = []
    for text in project["dependencies"] + project["optional-dependencies"][extra]:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            chosen.append(str(req))
    return chosen


def claims(project: dict) -> list[str]:
    """Disagreements between PYTHONS and pyproject's requires-python and classifiers."""
    problems = []
    spec = SpecifierSet(project["requires-python"])
    problems += [f"requires-python {spec} excludes {v}" for v in PYTHONS if f"{v}.0" not in spec]
    newer = f"3.{int(PYTHONS[-1].split('.')[1]) + 1}"
    if f"{newer}.0" in spec:
        problems.append(f"requires-python {spec} admits {newer}, which this check does not resolve")
    listed = {c.rsplit(" :: ", 1)[1] for c in project.get("classifiers", [])
              if c.startswith("Programming Language :: Python :: 3.")}
    if listed != set(PYTHONS):
        problems.append(f"classifiers name Python {sorted(listed)}, resolved: {list(PYTHONS)}")
    return problems


def resolve(python: str, *requirements: str, no_deps: bool = False, target: str | None = None) -> dict[str, str]:
    """name -> version of what `pip install` would put into a fresh environment."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
               *(["--no-deps"] if no_deps else []),
               *(["--python-version", target, *PLATFORM] if target else []), *requirements]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            where = f" for Python {target}" if target else ""
            raise SystemExit(f"pip could not resolve{where} {' '.join(requirements)}:\n{proc.stderr[-3000:]}")
        data = json.loads(report.read_text())
    return {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
            for item in sorted(data["install"], key=lambda item: item["metadata"]["name"].lower())}


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
    parser.add_argument("--versions", default=",".join(PYTHONS), help="comma list of the Pythons to resolve for")
    args = parser.parse_args(argv)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    # the resolutions are independent and mostly wait on the index: four side by side
    with ThreadPoolExecutor(4) as pool:
        jobs = {(v, extra): pool.submit(resolve, args.python, *requirements(extra, v, project), target=v)
                for v in versions for extra in ORT}
        second = pool.submit(resolve, args.python, INSIGHTFACE, no_deps=True)
        reports = {key: job.result() for key, job in jobs.items()}
        second_step = sorted(second.result())
    problems = claims(project)
    for (version, extra), found in reports.items():
        names = sorted(found)
        flavours = [n for n in names if n.startswith("onnxruntime")]
        opencv = [n for n in names if n in OPENCV]
        shown = ", ".join(f"{n} {found[n]}" for n in names if n.startswith(("mediapipe", "numpy", "protobuf", "onnx")))
        print(f"Python {version} .[{extra}]: {len(names)} distributions; onnxruntime: {flavours}; OpenCV: {opencv}; "
              f"{shown}")
        problems += [f"Python {version} {p}" for p in check(extra, names, second_step)]
    print(f"second step (--no-deps): {second_step}")
    for problem in problems:
        print(f"FAIL {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
