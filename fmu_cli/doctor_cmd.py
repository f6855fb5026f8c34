"""`fmu doctor`: a table of what is usable here and why not (thin wrapper over core.doctor)."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from . import panels as P
from .choices import FaceBackend, chosen
from .console import console


def doctor(
    base_model: str | None = typer.Option(None, "--base-model", help="Check this base: diffusers folder, hub id "
                                          "or single file.", rich_help_panel=P.MODELS),
    base_config: str | None = typer.Option(None, "--base-config", help="Config folder for a single-file base.",
                                            rich_help_panel=P.MODELS),
    adapter: str | None = typer.Option(None, "--adapter", help="Check this adapter (fmu, authors' model.bin, "
                                       "h94 file).", rich_help_panel=P.MODELS),
    lora: str | None = typer.Option(None, "--lora", help="Separate LoRA file for an IP-Adapter checkpoint.",
                                    rich_help_panel=P.MODELS),
    face_backend: FaceBackend | None = typer.Option(None, "--face-backend", help="Require this face backend.",
                                                        rich_help_panel=P.FACES),
    face_models: str | None = typer.Option(None, "--face-models", help="insightface models folder (buffalo_l / "
                                           "antelopev2 layout).", rich_help_panel=P.FACES),
    devices: str | None = typer.Option(None, "--devices", help="Require these devices: auto, cpu, cuda, cuda:N, mps, "
                                       "xpu, xpu:N or a comma list such as cuda:0,cuda:1.",
                                       rich_help_panel=P.DEVICES),
    weights: str | None = typer.Option(None, "--weights", help="Require this `fmu weights pull` folder to be complete "
                                       "(default: report on $FMU_HOME/weights).", rich_help_panel=P.MODELS),
    image_encoder: str | None = typer.Option(None, "--image-encoder", help="Check this CLIP image encoder folder "
                                             "(and its width against --adapter).", rich_help_panel=P.MODELS),
) -> None:
    """Report which weights, devices, providers and backends are usable here, and why not.

    Nothing is downloaded. Exit code 1 when something you asked for (--base-model, --adapter,
    --face-backend, --devices, --image-encoder) cannot run, when the parts do not fit the adapter
    (face embedding, image encoder or cross-attention width), or when onnxruntime flavours clash.

    Example:  fmu doctor --face-backend insightface --face-models ~/models --devices cuda
    """
    from fmu.core.doctor import diagnose  # deferred: heavy (torch, diffusers); keeps the CLI start fast

    report = diagnose(base_model=base_model, base_config=base_config, adapter=adapter, lora=lora,
                      face_backend=chosen(face_backend), face_models=face_models,
                      devices=devices.split(",") if devices else None, weights=weights,
                      image_encoder=image_encoder)
    table = Table(title="fmu doctor", show_lines=False)
    for column in ("area", "item", "status", "detail"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        status = {True: "[green]usable[/]", False: "[red]not usable[/]", None: "[dim]info[/]"}[check.ok]
        if check.required and check.ok is False:
            status = "[bold red]NOT USABLE (required)[/]"
        table.add_row(check.area, escape(check.name), status, escape(check.detail))
    console.print(table)
    if report.failures:
        console.print(f"[bold red]{len(report.failures)} requested item(s) cannot run:[/] "
                      + escape(", ".join(c.name for c in report.failures)), soft_wrap=True)
    raise typer.Exit(report.exit_code)
