"""Import `fmu` from this checkout, installed or not (the GPU machine has no install of it).

pyproject.toml maps the folders to one import root (fmu_cli/ is `fmu`, core/ is `fmu.core`, ...); this
finder applies the same mapping, ahead of any installed copy, so a bench measures the code beside it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"fmu": "fmu_cli", "fmu.core": "core", "fmu.training": "training", "fmu.manifests": "manifests"}


class CheckoutFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        folder = FOLDERS.get(name)
        if folder is None:  # submodules are found through their package's __path__, below these
            return None
        return importlib.util.spec_from_file_location(name, ROOT / folder / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / folder)])


def use_this_checkout() -> None:
    if not any(isinstance(f, CheckoutFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, CheckoutFinder())
