"""fmu's own folder, `$FMU_HOME` (default ~/.cache/fmu): built presets, pulled weights. A module of its
own so that reading the path imports nothing heavy (`fmu --help` builds the weights command's help)."""

from __future__ import annotations

import os
from pathlib import Path


def fmu_home() -> Path:
    return Path(os.environ.get("FMU_HOME", Path.home() / ".cache" / "fmu"))
