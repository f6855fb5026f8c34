"""fmu: Face-MakeUpV2 as a batch processor. From Python:

    import fmu
    fmu.generate("manifest.csv", out="runs/a")          # -> the run summary
    fmu.score("runs/a")                                  # -> the score result
    fmu.FaceMakeUp.from_pretrained(preset="tiny")("photo.jpg", "a portrait")

The command line (`fmu ...`) is the Typer app in fmu.app, one module per command family (thin:
parsing and printing; the work is in fmu.core and fmu.training).
"""

from __future__ import annotations

__all__ = ["FaceMakeUp", "generate", "score"]


def __getattr__(name: str):
    if name in __all__:
        # deferred: the public API pulls torch and diffusers; `fmu --help` (which imports this
        # package) must not pay for them
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'fmu' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
