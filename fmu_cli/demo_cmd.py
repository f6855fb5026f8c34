"""`fmu demo-inputs`: write the offline demo's photos, manifest and example masks."""

from __future__ import annotations

from pathlib import Path

import typer

from .console import console


def demo_inputs(folder: Path = typer.Argument(Path("runs/demo-inputs"), help="Where to write them.")) -> None:
    """Copy the real photos that ship with insightface and scikit-image, write a manifest, and the
    face/suit masks that manifests/examples/train_example.csv names (boxes from the dlib detector).

    Example:  fmu demo-inputs runs/demo-inputs && fmu generate runs/demo-inputs/manifest.csv --out runs/demo
    """
    from manifests.demo import write_demo_inputs

    console.print(f"wrote {write_demo_inputs(folder)}")
