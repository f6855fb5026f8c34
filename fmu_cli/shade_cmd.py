"""`fmu shade`: one image -> the ShadingNet condition PNG (thin wrapper over core.shading)."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fmu.core.errors import RowError, UsageError
from fmu.core.faces import get_backend
from fmu.core.faces.crops import FRAME_SCALE, face_frame_box
from fmu.core.images import load_rgb, save_png
from fmu.core.runner.conditions import parse_frame
from fmu.core.shading import make_condition
from fmu.core.shading.controls import POSE_BOUNDS, ControlRequest, is_neutral, resolve
from fmu.core.shading.light_presets import LightError, parse_light
from fmu.core.shading.render import resolve_backend

from . import panels as P
from .choices import FaceBackend, Frame, Renderer, chosen
from .console import console, error, refuse_overwriting

MAX_FRAME_SCALE = 50.0   # a frame 50x the face is the whole scene; inf overflowed the crop (a traceback)


def _fail(message: str) -> None:
    """The photo (or target) is unusable: one line, exit 1."""
    error(message)
    raise typer.Exit(1)


def shade(
    image: Path = typer.Argument(..., help="Reference photo (any format Pillow reads)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the condition PNG.", rich_help_panel=P.OUTPUT),
    target: Path | None = typer.Option(None, "--target", help="Take pose, expression and lighting from this photo "
                                       "instead.", rich_help_panel=P.FACES),
    renderer: Renderer = typer.Option("auto", "--renderer", help="Shading renderer (auto: pytorch3d when "
                                      "installed, else cpu).", rich_help_panel=P.FACES),
    size: int = typer.Option(512, "--size", min=64, max=4096, help="Side of the square condition image.",
                             rich_help_panel=P.OUTPUT),
    frame: Frame = typer.Option("face", "--frame", help="The square of the photo rendered (as in `fmu generate`).",
                                rich_help_panel=P.FACES),
    frame_scale: float = typer.Option(FRAME_SCALE, "--frame-scale", min=0.1, max=MAX_FRAME_SCALE,
                                      help="Face frame side / landmark-box side.", rich_help_panel=P.FACES),
    face_backend: FaceBackend = typer.Option("dlib", "--face-backend", help="Finds the face the face frame is "
                                             "cut around.", rich_help_panel=P.FACES),
    face_models: Path | None = typer.Option(None, help="insightface models folder (buffalo_l layout).",
                                            rich_help_panel=P.FACES),
    yaw: float | None = typer.Option(None, "--yaw", help="Head yaw of the render, degrees (-90..90; > 0 "
                                        "turns toward the image's right). Default: as fitted.",
                                        rich_help_panel=P.FACES),
    pitch: float | None = typer.Option(None, "--pitch", help="Head pitch, degrees (-60..60; > 0 looks up).",
                                       rich_help_panel=P.FACES),
    roll: float | None = typer.Option(None, "--roll", help="Head roll, degrees (-90..90; > 0 clockwise).",
                                      rich_help_panel=P.FACES),
    expression: str | None = typer.Option(None, "--expression", help="Image whose expression the face "
                                             "wears, or neutral (mouth closed).", rich_help_panel=P.FACES),
    light: str | None = typer.Option(None, "--light", help="A preset (front, left, right, top, bottom, "
                                        "key-left, key-right, rim, flat), az=..,el=..[,strength=..] or nine "
                                        "SH numbers (manifests/README.md).", rich_help_panel=P.FACES),
) -> None:
    """Render the untextured, SH-shaded face mesh that conditions the 3D channel.

    The photo is cut to the frame generated images show (by default the authors' square
    around the face, FRAME-SCALE times its landmark box; --frame centre: the centre square)
    and resized to SIZE, the face mesh is reconstructed, its lighting fitted, and the mesh
    rendered grey on black. With --target the target's mesh, pose, expression and lighting
    (and frame) are used. --yaw/--pitch/--roll, --expression and --light replace those parts,
    as the manifest columns of the same names do in `fmu generate`.

    Example:

        fmu shade photo.jpg --out cond.png --target other.jpg

        fmu shade photo.jpg --out cond.png --yaw 30 --light left

    Exit code: 0 written, 1 the photo (or target) is unusable (no face, unreadable), 2 usage error.
    """
    frame, renderer = parse_frame(chosen(frame)), chosen(renderer)
    request = _control_request(yaw, pitch, roll, expression, light)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give the PNG file to write")
    refuse_overwriting(out, [image, target, None if expression is None else Path(expression)])
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
    except RowError as exc:
        _fail(exc.reason)
    try:
        controls = resolve(request)
    except RowError as exc:  # the expression image is unusable
        _fail(f"expression {exc.reason}")
    try:
        result = make_condition(ref, tgt, size=size, renderer=renderer, box=box, controls=controls)
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
    if not request.empty:
        asked = ", ".join(f"{k} {getattr(request, k)}" for k in ("yaw", "pitch", "roll", "expression", "light")
                          if getattr(request, k) is not None)
        console.print(f"asked for: {escape(asked)}", soft_wrap=True)
    console.print(f"wrote {escape(str(out))} ({size}x{size}; frame: the {side}x{side} square at x={left}, "
                  f"y={top})", soft_wrap=True)


def _control_request(yaw, pitch, roll, expression, light):
    """The controls asked for, checked like the manifest columns (UsageError when unusable)."""
    for name, value in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
        lo, hi = POSE_BOUNDS[name]
        if value is not None and not (math.isfinite(value) and lo <= value <= hi):
            raise UsageError(f"--{name} {value:g}: outside [{lo:g}, {hi:g}]")
    if expression is not None and not is_neutral(expression) and not Path(expression).is_file():
        raise UsageError(f"--expression {expression}: no such image file")
    if light is not None:
        try:
            parse_light(light)
        except LightError as exc:
            raise UsageError(f"--light: {exc}") from None
    return ControlRequest(yaw=yaw, pitch=pitch, roll=roll, expression=expression, light=light)


def _face_backend(name: str, models: Path | None):
    try:
        return get_backend(name, models_dir=models)
    except Exception as exc:  # noqa: BLE001  missing model files, a broken install: one line, exit 2
        raise UsageError(f"face backend {name!r} unavailable: {exc}") from None
