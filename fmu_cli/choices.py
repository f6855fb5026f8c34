"""The closed choices of fmu's flags, as Typer enums built from the tuples the core checks against
(one source): Typer lists them in --help and refuses anything else with exit code 2.

Only light modules are imported here (no torch): `fmu --help` must not wait for a model library.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence

import typer

from fmu.core.faces import BACKENDS as FACE_BACKENDS
from fmu.core.faces import MULTI_FACE_POLICIES
from fmu.core.faces.crops import CROP_STYLES
from fmu.core.model.settings import PRECISIONS, SCHEDULERS
from fmu.core.runner.conditions import FRAMES
from fmu.core.runner.distribute import ENGINES
from fmu.core.shading.render import BACKENDS as RENDERERS
from fmu.training.config import MASK_MODES, MIXED_PRECISIONS, PREPARE_DEDUPE, PREPARE_MULTI_FACE


def _choices(name: str, values: Sequence[str]) -> type[enum.StrEnum]:
    return enum.StrEnum(name, {v: v for v in values})


FaceBackend = _choices("FaceBackend", FACE_BACKENDS)
Engine = _choices("Engine", ENGINES)
MultiFace = _choices("MultiFace", MULTI_FACE_POLICIES)
PrepareMultiFace = _choices("PrepareMultiFace", PREPARE_MULTI_FACE)
PrepareDedupe = _choices("PrepareDedupe", PREPARE_DEDUPE)
FaceCrop = _choices("FaceCrop", CROP_STYLES)
Frame = _choices("Frame", (*FRAMES, "center"))  # center: centre, spelled the other way
Renderer = _choices("Renderer", RENDERERS)
Scheduler = _choices("Scheduler", SCHEDULERS)
Precision = _choices("Precision", PRECISIONS)
MixedPrecision = _choices("MixedPrecision", MIXED_PRECISIONS)
MaskMode = _choices("MaskMode", MASK_MODES)


def chosen(choice: enum.Enum | None) -> str | None:
    """The plain string of a chosen member (what the core takes), None for an option left out."""
    return None if choice is None else choice.value


def comma_list(choices: Callable[[], Sequence[str]]) -> Callable[[str], tuple[str, ...]]:
    """A Typer `parser` for a comma-separated list of choices (`--metrics clip,fid`), refused like
    an enum when an item is not one of them. `choices` is a function, so names that live in a heavy
    module (the metrics) are read only when the command runs."""

    def parse(text) -> tuple[str, ...]:
        if isinstance(text, tuple):
            return text
        items = tuple(v.strip() for v in str(text).split(",") if v.strip())
        allowed = tuple(choices())
        unknown = [v for v in items if v not in allowed]
        if unknown or not items:
            raise typer.BadParameter(f"{', '.join(map(repr, unknown)) or repr(text)} is not one of "
                                     f"{', '.join(map(repr, allowed))} (or a comma list of them)")
        return items

    return parse
