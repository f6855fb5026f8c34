"""`fmu expand`: a manifest times a grid of pose / expression / light values -> an explicit manifest."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from . import panels as P
from .console import console, err, error, refuse_overwriting, shown


def expand(
    manifest: Path = typer.Argument(..., help="CSV or Parquet generation manifest."),
    out: Path = typer.Option(..., "--out", "-o", help="The manifest to write: .csv or .parquet.",
                             rich_help_panel=P.OUTPUT),
    yaw: list[str] | None = typer.Option(None, "--yaw", metavar="RANGE|LIST", help="Degrees: start:stop:step "
                                         "(stop included), e.g. -45:45:15, or a comma list; repeatable.",
                                         rich_help_panel=P.FACES),
    pitch: list[str] | None = typer.Option(None, "--pitch", metavar="RANGE|LIST", help="Degrees, like --yaw.",
                                           rich_help_panel=P.FACES),
    roll: list[str] | None = typer.Option(None, "--roll", metavar="RANGE|LIST", help="Degrees, like --yaw.",
                                          rich_help_panel=P.FACES),
    expression: list[str] | None = typer.Option(None, "--expression", metavar="IMAGES",
                                                   help="Images whose expression to "
                                                   "use, or neutral; comma list or repeated.", rich_help_panel=P.FACES),
    light: list[str] | None = typer.Option(None, "--light", metavar="LIGHTS", help="Presets (front,left,right,...), "
                                              "az=..,el=..[,strength=..] or nine SH numbers; separate "
                                              "specs with ';' or repeat --light.", rich_help_panel=P.FACES),
    override: bool = typer.Option(False, "--override", help="Let the grid replace pose / expression / light values "
                                  "rows already have (refused otherwise).", rich_help_panel=P.OUTPUT),
) -> None:
    """Write one manifest row per (row, combination of the values given), ids suffixed by the values
    (astro -> astro_yaw-45_light-left). Generate it with `fmu generate OUT`. Give the rows a `seed`
    to have every cell of a grid start from the same noise.

    Example:  fmu expand faces.csv --yaw -45:45:15 --light front,left,right --out grid.csv

    A grid axis the manifest already has values for is refused (the grid would replace them) unless
    --override is given.
    Exit code: 0 written, 2 usage error (bad range, unknown light, missing expression image, a value
    the grid would replace without --override).
    """
    # deferred: keeps `fmu --help` fast (polars, the shading package)
    from fmu.core.errors import UsageError
    from fmu.core.manifest.expand import expand_manifest, parse_angles, split_expressions, split_lights, write_manifest

    try:
        axes = {name: parse_angles(name, values) for name, values in (("yaw", yaw), ("pitch", pitch),
                                                                       ("roll", roll)) if values}
        if expression:
            axes["expression"] = split_expressions(expression)
        if light:
            axes["light"] = split_lights(light)
        refuse_overwriting(out, [manifest])
        table = expand_manifest(manifest, axes, out, override=override,
                                log=lambda line: err.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True))
        write_manifest(table, out)
    except UsageError as exc:
        error(str(exc))
        raise typer.Exit(2) from None
    except OSError as exc:
        error(f"cannot write {out}: {exc.strerror or exc}")
        raise typer.Exit(2) from None
    sizes = " x ".join(f"{len(v)} {k}" for k, v in axes.items())
    console.print(f"wrote {shown(out)}: {table.height} rows ({sizes} per manifest row)")
