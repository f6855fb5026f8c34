"""`fmu weights pull` / `fmu weights list`: the real weights, fetched into the layout generate reads."""

from __future__ import annotations

import enum
import os
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fmu.core.errors import UsageError, first_line
from fmu.core.weights.layout import default_dir, missing_roles, roles_of
from fmu.core.weights.sets import ADDONS, DEFAULT_SET, SETS, piece_names

from . import panels as P
from .console import console, download_bar, err, error
from .panels import Command, Group

WeightSet = enum.StrEnum("WeightSet", {name: name for name in SETS})

app = typer.Typer(cls=Group, no_args_is_help=True, help="Fetch the weights a real run needs (Hugging Face Hub, "
                  "GitHub) into one folder that `fmu generate --weights DIR` uses.")


def _only(text: str | None, set_name: str) -> tuple[str, ...] | None:
    if not text:
        return None
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [n for n in names if n not in piece_names(set_name)]
    if unknown or not names:
        raise UsageError(f"--only {text}: the {set_name} set has {', '.join(piece_names(set_name))}")
    return names


@app.command("pull", cls=Command)
def pull(
    set_name: WeightSet = typer.Option(DEFAULT_SET, "--set", help="authors: Face-MakeUpV2's checkpoint (identity "
                                       "channel + ShadingNet, converted from the authors' RAR); h94: "
                                       "IP-Adapter-FaceID-PlusV2 + its LoRA (identity channel only); scoring: "
                                       "fmu score's CLIP ViT-L/14, DINO, LPIPS, Inception (FID), beside either.",
                                       rich_help_panel=P.MODELS),
    folder: Path | None = typer.Option(None, "--dir", help="Weights folder (default $FMU_HOME/weights, "
                                       "i.e. ~/.cache/fmu/weights).", rich_help_panel=P.MODELS),
    only: str | None = typer.Option(None, "--only", metavar="LIST", help="Comma list of pieces to fetch: "
                                    "base, vae, image-encoder, adapter-authors | adapter-h94, insightface; "
                                    "scoring: clip, dino, lpips, inception.",
                                    rich_help_panel=P.MODELS),
) -> None:
    """Download a weight set (several GB); re-running resumes cut-off files and skips finished ones.

    Example:  fmu weights pull --set authors && fmu generate manifest.csv --weights ~/.cache/fmu/weights --out runs/a
    Licences: see README ("Weights"); insightface's packs and h94's FaceID adapters are for
    non-commercial research use only. Exit code: 0 all pieces ready, 1 some piece failed, 2 usage error.
    """
    from fmu.core.weights.pull import pull as run_pull  # deferred: huggingface_hub's download machinery

    name = set_name.value
    folder = (folder or default_dir()).expanduser()
    pieces = _only(only, name)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--dir {folder} is a file; give a folder (made when missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(13, "not writable")
        with download_bar() as progress:
            summary = run_pull(name, folder, pieces, progress=progress)
    except OSError as exc:  # a read-only folder, a full disk: what was complete is kept, a re-run resumes
        error(f"cannot write to {folder}: {exc.strerror or first_line(exc)}; what was complete is kept, "
              "re-run the same command to resume")
        raise typer.Exit(1) from None
    table = Table("piece", "status", "detail", title=f"weights set {name} -> {escape(str(folder))}")
    for piece in summary.pieces:
        table.add_row(piece.name, "[green]ready[/]" if piece.ok else "[red]failed[/]", escape(piece.detail))
    console.print(table)
    missing = missing_roles(folder, name)
    if summary.ok and not missing:
        use = "fmu score RUN_DIR" if name in ADDONS else "fmu generate MANIFEST --out runs/a"
        console.print(f"use it:  {use} --weights {escape(str(folder))}", soft_wrap=True)
        raise typer.Exit(0)
    if missing:
        err.print(f"[yellow]not ready yet:[/] {', '.join(missing)}; re-run the same command to resume", soft_wrap=True)
    raise typer.Exit(0 if summary.ok else 1)


@app.command("list", cls=Command)
def list_weights(
    folder: Path | None = typer.Option(None, "--dir", help="Weights folder (default $FMU_HOME/weights).",
                                       rich_help_panel=P.MODELS),
) -> None:
    """Show what a weights folder holds and the generate option each file fills."""
    folder = (folder or default_dir()).expanduser()
    roles = roles_of(folder)
    table = Table("option", "path", title=escape(str(folder)))
    for role, path in roles.items():
        table.add_row("--" + role.replace("_", "-"), escape(str(path)))
    console.print(table)
    missing = missing_roles(folder)
    if missing:
        console.print(f"missing: {', '.join(missing)} (fmu weights pull --dir {escape(str(folder))})", soft_wrap=True)
