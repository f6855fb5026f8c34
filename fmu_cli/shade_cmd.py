"""`fmu shade`: one image -> the ShadingNet condition PNG (thin wrapper over core.shading)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from core.errors import RowError, UsageError
from core.faces import get_backend
from core.faces.crops import FRAME_SCALE, face_frame_box
from core.images import load_rgb, save_png
from core.runner.conditions import parse_frame
from core.shading import make_condition
from core.shading.render import resolve_backend

from .choices import FaceBackend, Frame, Renderer, chosen
from .console import console, error


def _fail(message: str) -> None:
    """The photo (or target) is unusable: one line, exit 1."""
    error(message)
    raise typer.Exit(1)


def shade(
    image: Path = typer.Argument(..., help="Reference photo (any format Pillow reads)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the condition PNG."),
    target: Path | None = typer.Option(None, "--target", help="Take pose, expression and lighting from this photo "
                                       "instead."),
    renderer: Renderer = typer.Option("auto", "--renderer", help="Shading renderer (auto: pytorch3d when "
                                      "installed, else cpu)."),
    size: int = typer.Option(512, "--size", min=64, max=4096, help="Side of the square condition image."),
    frame: Frame = typer.Option("face", "--frame", help="The square of the photo rendered (as in `fmu generate`)."),
    frame_scale: float = typer.Option(FRAME_SCALE, "--frame-scale", min=0.1, help="Face frame side / "
                                      "landmark-box side."),
    face_backend: FaceBackend = typer.Option("dlib", "--face-backend", help="Finds the face the face frame is "
                                             "cut around."),
    face_models: Path | None = typer.Option(None, help="insightface models folder (buffalo_l layout)."),
) -> None:
    """Render the untextured, SH-shaded face mesh that conditions the 3D channel.

    The photo is cut to the frame generated images show (by default the authors' square
    around the face, FRAME-SCALE times its landmark box; --frame centre: the centre square)
    and resized to SIZE, the face mesh is reconstructed, its lighting fitted, and the mesh
    rendered grey on black. With --target the target's mesh, pose, expression and lighting
    (and frame) are used.

    Example:

        fmu shade photo.jpg --out cond.png --target other.jpg

    Exit code: 0 written, 1 the photo (or target) is unusable (no face, unreadable), 2 usage error.
    """
    frame, renderer = parse_frame(chosen(frame)), chosen(renderer)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give the PNG file to write")
    try:
        resolve_backend(renderer)
    except RuntimeError as exc:  # pytorch3d asked for and not installed
        raise UsageError(str(exc)) from None
    backend = _face_backend(chosen(face_backend), face_models) if frame == "face" else None
    try:
        ref = load_rgb(image)
        tgt = load_rgb(target) if target is not None else None
        box = None
        if backend is not None:
            source = tgt if tgt is not None else ref
            box = face_frame_box(backend.analyse(source).landmarks, source.shape, frame_scale)
        result = make_condition(ref, tgt, size=size, renderer=renderer, box=box)
    except RowError as exc:
        _fail(exc.reason)
    try:
        save_png(out, result.condition)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    left, top, side = result.frame

    source = f"target {target}" if result.from_target else str(image)
    table = Table(title=f"shading of {escape(source)}", show_header=True)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for name, value in zip(("yaw", "pitch", "roll"), result.pose):
        table.add_row(f"{name} (deg)", f"{value:+.2f}")
    for k, value in enumerate(result.sh):
        table.add_row(f"sh[{k}]", f"{value:+.4f}")
    console.print(table)
    console.print(f"wrote {escape(str(out))} ({size}x{size}; frame: the {side}x{side} square at x={left}, "
                  f"y={top})", soft_wrap=True)


def _face_backend(name: str, models: Path | None):
    try:
        return get_backend(name, models_dir=models)
    except Exception as exc:  # noqa: BLE001  missing model files, a broken install: one line, exit 2
        raise UsageError(f"face backend {name!r} unavailable: {exc}") from None
