"""`fmu shade`: one image -> the ShadingNet condition PNG (thin wrapper over core.shading)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.errors import RowError
from core.images import load_rgb, save_png

console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    # soft_wrap: one line whatever the terminal width; escape: paths may contain [brackets].
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def shade(
    image: Path = typer.Argument(..., help="Reference photo (any format Pillow reads)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the condition PNG."),
    target: Optional[Path] = typer.Option(None, "--target", help="Take pose, expression and lighting from this photo instead."),
    renderer: str = typer.Option("auto", "--renderer", help="auto | cpu | pytorch3d"),
    size: int = typer.Option(512, "--size", min=64, max=4096, help="Side of the square condition image."),
) -> None:
    """Render the untextured, SH-shaded face mesh that conditions the 3D channel.

    The photo is centre-cropped to a square and resized to SIZE (the frame generated images
    share), the face mesh is reconstructed, its lighting fitted, and the mesh rendered
    grey on black. With --target the target's mesh, pose, expression and lighting are used.

    Example:

        fmu shade photo.jpg --out cond.png --target other.jpg
    """
    from core.shading import make_condition

    try:
        ref = load_rgb(image)
        tgt = load_rgb(target) if target is not None else None
        result = make_condition(ref, tgt, size=size, renderer=renderer)
    except RowError as exc:
        _fail(exc.reason)
    except (ValueError, RuntimeError) as exc:  # unknown / unavailable renderer
        _fail(str(exc))
    save_png(out, result.condition)

    source = f"target {target}" if result.from_target else str(image)
    table = Table(title=f"shading of {escape(source)}", show_header=True)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for name, value in zip(("yaw", "pitch", "roll"), result.pose):
        table.add_row(f"{name} (deg)", f"{value:+.2f}")
    for k, value in enumerate(result.sh):
        table.add_row(f"sh[{k}]", f"{value:+.4f}")
    console.print(table)
    console.print(f"wrote {escape(str(out))} ({size}x{size})", soft_wrap=True)
