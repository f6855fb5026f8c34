"""`fmu demo-inputs`: write the offline demo's photos, manifest and example masks."""

from __future__ import annotations

from pathlib import Path

import typer

from .console import console


def demo_inputs(folder: Path = typer.Argument(Path("runs/demo-inputs"), help="Where to write them.")) -> None:
    """Copy the real photos that ship with insightface and scikit-image, write a manifest, and the
    face/suit masks that manifests/examples/train_example.csv names (boxes from the dlib detector).

    Also a scoring example of real photos (the demo's generated images are toy noise), on which
    `fmu score` measures identity similarity:

        fmu score --images DIR/score-example/images --manifest DIR/score-example/manifest.csv

    Example:  fmu demo-inputs runs/demo-inputs && fmu generate runs/demo-inputs/manifest.csv --out runs/demo
    """
    from fmu.manifests.demo import SCORE_EXAMPLE, write_demo_inputs  # deferred: the photos' packages are heavy

    manifest = write_demo_inputs(folder)
    console.print(f"wrote {manifest}")
    example = folder / SCORE_EXAMPLE
    console.print(f"scoring example: fmu score --images {example / 'images'} --manifest {example / 'manifest.csv'}",
                  soft_wrap=True)
