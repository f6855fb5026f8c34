"""One import root: the distribution installs `fmu` (fmu_cli/ is the package itself; core/, training/ and
manifests/ are its subpackages) and nothing generic (`core`, `training`, ...) at the top of site-packages."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"fmu_cli": "fmu", "core": "fmu.core", "training": "fmu.training", "manifests": "fmu.manifests"}


def _packages_on_disk() -> list[str]:
    found = []
    for folder, package in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            below = init.parent.relative_to(ROOT / folder).parts
            found.append(".".join([package, *below]))
    return sorted(found)


def test_pyproject_lists_every_package_under_its_fmu_name():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert sorted(tool["packages"]) == _packages_on_disk()
    assert tool["package-dir"] == {package: folder for folder, package in FOLDERS.items()}


def test_only_fmu_is_importable_from_outside_the_checkout(tmp_path):
    """From a folder that is not the checkout, `fmu` and its parts import, the bare folder names do not."""
    code = ("import importlib.util, fmu, fmu.core, fmu.training, fmu.manifests, fmu.app\n"
            "print([n for n in ('core', 'training', 'manifests', 'fmu_cli') if importlib.util.find_spec(n)])\n"
            "print(fmu.core.__file__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    generic, core_file = done.stdout.splitlines()
    assert generic == "[]"
    assert Path(core_file) == ROOT / "core" / "__init__.py"


def test_the_wheel_holds_one_top_level_name(tmp_path):
    """The built distribution itself: every file of the wheel (but its metadata) lies under fmu/."""
    # no build isolation: the test extra brings setuptools, so nothing is fetched
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
           str(ROOT)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    wheel = next(tmp_path.glob("fmu-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert tops == {"fmu"}
    assert "fmu/core/runner/worker.py" in names and "fmu/app.py" in names and "fmu/manifests/README.md" in names
