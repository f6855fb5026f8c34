"""`fmu score`: the paper's metrics over a run folder (or images + manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from fmu.core.devices import parse_device, parse_devices
from fmu.core.errors import UsageError
from fmu.core.faces import BACKENDS as FACE_BACKENDS
from fmu.core.runner.distribute import pick_merging_engine

from . import panels as P
from .choices import Precision, chosen, comma_list
from .console import console, err, progress_bar
from .engine_options import MergingEngineOpt, RayAddressOpt, RayCpusOpt
from .panels import Command


def _face_backends() -> tuple[str, ...]:
    return FACE_BACKENDS


def _metrics() -> tuple[str, ...]:
    from fmu.core.scoring import metric_names  # deferred: the scoring package pulls polars and its models' code

    return (*metric_names(), "all")


def metrics_help() -> str:
    """`--metrics`' help, from the metrics registry: every metric's name and help line."""
    from fmu.core.scoring.registry import help_text  # deferred: the scoring package pulls polars

    return help_text()


BACKEND_LIST, METRIC_LIST = comma_list(_face_backends), comma_list(_metrics)


class ScoreCommand(Command):
    """`fmu score`: its `--metrics` help is read from the metrics registry when the help is shown
    (the registry lives in the scoring package, which `fmu --help` does not import)."""

    def format_help(self, ctx, formatter):
        for param in self.params:
            if param.name == "metrics":
                param.help = metrics_help()
        return super().format_help(ctx, formatter)


def score(
    run_dir: Path | None = typer.Argument(None, help="Run folder written by `fmu generate`."),
    images: Path | None = typer.Option(None, help="Folder of <id>_<k>.png / <id>.png (instead of RUN_DIR).",
                                       rich_help_panel=P.DATA),
    manifest: Path | None = typer.Option(None, help="CSV/Parquet pairing --images with references and prompts.",
                                         rich_help_panel=P.DATA),
    out: Path | None = typer.Option(None, help="Where to write scores (default: RUN_DIR, or --images).",
                                    rich_help_panel=P.OUTPUT),
    weights: Path | None = typer.Option(None, help="A folder filled by `fmu weights pull --set scoring`: its CLIP, "
                                        "DINO, LPIPS, Inception (and insightface) files fill the model options "
                                        "left open (an explicit flag wins).", rich_help_panel=P.MODELS),
    face_models: Path | None = typer.Option(None, help="insightface models folder / pack for ArcFace FaceSim, as in "
                                            "fmu generate (a pulled weights folder has it at DIR/insightface/models).",
                                            rich_help_panel=P.MODELS),
    face_backend: Any = typer.Option(  # Any: a tuple of names (comma_list)
        None, parser=BACKEND_LIST, metavar="LIST",
        help="Face backend(s) for FaceSim: dlib, insightface or a comma list of them (default: the run's "
             "backend, else dlib).", rich_help_panel=P.FACES),
    det_size: int = typer.Option(640, min=32, help="insightface detector input size (paper: 640).",
                                 rich_help_panel=P.FACES),
    clip_model: str | None = typer.Option(None, help="CLIP folder or cached hub id (default "
                                          "openai/clip-vit-large-patch14).", rich_help_panel=P.MODELS),
    dino_model: str | None = typer.Option(None, help="DINO ViT folder or cached hub id (default "
                                          "facebook/dino-vits16).", rich_help_panel=P.MODELS),
    lpips_weights: Path | None = typer.Option(None, help="Folder with alexnet-owt-7be5be79.pth and LPIPS alex.pth.",
                                              rich_help_panel=P.MODELS),
    fid_weights: Path | None = typer.Option(None, help="pt_inception-2015-12-05-6726825d.pth (pytorch-fid).",
                                            rich_help_panel=P.MODELS),
    metrics: Any = typer.Option("all", parser=METRIC_LIST, metavar="LIST",
                                help="Comma list of metrics, or all (listed by `fmu score --help`).",
                                rich_help_panel=P.OUTPUT),
    device: str = typer.Option("cpu", "--devices", help="Where the metric models run: cpu | cuda | cuda:N | mps | "
                               "xpu | xpu:N | auto; with --engine processes or ray a list such as cuda:0,cuda:1 or "
                               "cpu,cpu (one worker per entry).", rich_help_panel=P.DEVICES),
    engine: MergingEngineOpt = None,
    ray_address: RayAddressOpt = None,
    ray_cpus: RayCpusOpt = 1.0,
    precision: Precision = typer.Option("fp32", help="Precision of the CLIP and DINO models (bf16 / fp16 run on "
                                        "CPU too; auto: fp16 on a GPU). LPIPS and FID always run in fp32, the "
                                        "precision their published values come from.", rich_help_panel=P.DEVICES),
    workers: int = typer.Option(2, min=1, help="Threads decoding images and detecting faces.",
                                rich_help_panel=P.SPEED),
    batch_size: int = typer.Option(16, min=1, help="Faces / images per model batch.", rich_help_panel=P.SPEED),
    no_report: bool = typer.Option(False, "--no-report", help="Skip report.html.", rich_help_panel=P.OUTPUT),
    sheet: bool = typer.Option(False, "--sheet", help="Also write sheet.png: per reference its condition and "
                               "outputs, each with its prompt and score.", rich_help_panel=P.OUTPUT),
) -> None:
    """Score generated images: FaceSim, CLIP-T/I, DINO, LPIPS, FID, Pose/Light-RMSE.

    Example:  fmu score runs/a --face-backend dlib
              fmu score --images out/ --manifest refs.csv --clip-model ~/models/clip-vit-large-patch14

    Writes scores.parquet, summary.json and report.html. A metric whose weights are not on this
    machine is reported unavailable with the reason. An output with no detected face counts as
    a failure (0 in the strict FaceSim mean). Exit code: 0 all rows scored, 1 some rows failed
    (unreadable, missing reference, no face), 2 usage error.
    """
    # deferred: heavy (polars, scipy, the metrics); keeps the CLI start fast
    from fmu.core.scoring import ScoreOptions, check_options, metric_names

    _check_sources(run_dir, images, manifest)
    names = metric_names() if "all" in metrics else metrics
    if weights is not None:
        clip_model, dino_model, lpips_weights, fid_weights, face_models = _from_weights(
            weights, clip_model, dino_model, lpips_weights, fid_weights, face_models)
    opts = ScoreOptions(face_backends=list(face_backend or ["dlib"]), face_models=face_models, det_size=det_size,
                        clip_model=clip_model, dino_model=dino_model, lpips_weights=lpips_weights,
                        fid_weights=fid_weights, metrics=names, device=device, precision=precision.value,
                        workers=workers, batch_size=batch_size, report=not no_report, sheet=sheet,
                        engine=chosen(engine) or "inline", ray_address=ray_address, ray_cpus=ray_cpus)
    check_options(opts)  # every path given exists, before anything is read or written
    result = _score(opts, run_dir, images, manifest, out, backend_from_run=face_backend is None)
    console.print(f"-> {result.out_dir / 'scores.parquet'}, summary.json"
                  + (", report.html" if not no_report else "") + (", sheet.png" if sheet else ""))
    if not result.all_ok:
        raise typer.Exit(1)


def _score(opts, run_dir: Path | None, images: Path | None, manifest: Path | None, out: Path | None,
           backend_from_run: bool):
    """The run folder's score, or the images'; the bar shows while the metrics run and is cleared
    before the summary table."""
    from fmu.core.scoring import score_images, score_run  # deferred: heavy, as in `score`

    run_on = score_engine(opts)  # devices torch can use and an engine here, before anything is written
    if run_dir is None:
        return score_images(images, manifest, out, opts, console=console, progress=progress_bar(transient=True),
                            engine=run_on)
    if out is not None:
        err.print("[yellow]note:[/] --out is ignored for a run folder: scores live next to results.parquet")
    return score_run(run_dir, opts, console=console, backend_from_run=backend_from_run,
                     progress=progress_bar(transient=True), engine=run_on)


def score_engine(opts):
    """The engine `opts.engine` names, for `opts.device`'s devices (None: inline, in this process on
    one device). Usage errors: a device torch cannot use, several devices inline, torchrun."""
    if opts.engine == "inline":
        parse_device(opts.device)
        return None
    return pick_merging_engine(opts.engine, "fmu score", parse_devices(opts.device), ray_address=opts.ray_address,
                               ray_cpus=opts.ray_cpus)


def _check_sources(run_dir: Path | None, images: Path | None, manifest: Path | None) -> None:
    """A run folder, or --images with --manifest."""
    if (run_dir is None) == (images is None):
        raise UsageError("give either RUN_DIR or --images DIR --manifest FILE")
    if images is not None and manifest is None:
        raise UsageError("--images needs --manifest")
    if run_dir is not None and not run_dir.is_dir():
        raise UsageError(f"{run_dir} is not a folder")


def _from_weights(folder: Path, clip_model, dino_model, lpips_weights, fid_weights, face_models) -> tuple:
    """--weights DIR: the pulled scoring models fill the options left open; what the folder lacks is
    said once, with the command that fetches it (those metrics are then looked for as usual)."""
    from fmu.core.weights.layout import pull_command, roles_of, score_options  # deferred: keeps the CLI start fast

    found, missing = score_options(folder)
    if missing:
        err.print(f"[yellow]warning:[/] {escape(str(folder))} has no {', '.join(missing)}; "
                  f"`{escape(pull_command(folder, 'scoring'))}` fetches them", soft_wrap=True)
    given = {"clip_model": clip_model, "dino_model": dino_model, "lpips_weights": lpips_weights,
             "fid_weights": fid_weights}
    filled = {role: value if value is not None else found.get(role) for role, value in given.items()}
    if face_models is None:
        face_models = roles_of(folder).get("face_models")
    for role in ("clip_model", "dino_model"):
        if filled[role] is not None:
            filled[role] = str(filled[role])
    return filled["clip_model"], filled["dino_model"], filled["lpips_weights"], filled["fid_weights"], face_models
