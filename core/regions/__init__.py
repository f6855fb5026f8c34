"""Face regions by name: a photo and its face -> region masks, from a chosen parser.

`get_parser("mesh")` (offline: mediapipe FaceMesh landmarks, mesh.py) or
`get_parser("segformer:<folder or hub id>")` (a transformers SegFormer face parser, segformer.py);
both return a `RegionParser` (base.py) whose `parse(image, box)` gives `RegionMasks`. Names of
regions: names.py. Plug-ins: `register_parser(kind, factory)`, factory(argument) -> parser.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UsageError
from .base import (
    EMPTY,
    MIN_PIXELS,
    NOT_SUPPORTED,
    NOT_VISIBLE,
    FaceFrame,
    RegionMasks,
    RegionParser,
)
from .names import REGIONS, check_regions
from .segformer import SegformerParser


def _mesh(argument: str | None) -> RegionParser:
    from .mesh import MeshParser  # deferred: heavy (mediapipe, core.shading, scipy); only a mesh run needs it

    if argument:
        raise UsageError(f"--parser mesh takes no argument (got mesh:{argument})")
    return MeshParser()


def _segformer(argument: str | None) -> RegionParser:
    if not argument:
        raise UsageError("--parser segformer needs a model: segformer:<folder or hub id>")
    return SegformerParser(argument)


_FACTORIES: dict[str, Callable[[str | None], RegionParser]] = {"mesh": _mesh, "segformer": _segformer}


def register_parser(kind: str, factory: Callable[[str | None], RegionParser]) -> None:
    """Make `get_parser("kind[:argument]")` call `factory(argument)`."""
    _FACTORIES[kind] = factory


def parser_kinds() -> list[str]:
    return sorted(_FACTORIES)


def get_parser(spec: str) -> RegionParser:
    """A parser from its spec, "kind" or "kind:argument"; UsageError for an unknown kind or a
    model that cannot be loaded."""
    kind, _, argument = str(spec).partition(":")
    if kind not in _FACTORIES:
        kinds = ", ".join(k + ("" if k == "mesh" else ":<model>") for k in parser_kinds())
        raise UsageError(f"--parser {spec!r}: use one of {kinds}")
    return _FACTORIES[kind](argument or None)


__all__ = ["EMPTY", "MIN_PIXELS", "NOT_SUPPORTED", "NOT_VISIBLE", "REGIONS", "FaceFrame", "RegionMasks",
           "RegionParser", "check_regions", "get_parser", "parser_kinds", "register_parser"]
