"""`fmu convert`: an authors' / h94 IP-Adapter checkpoint -> an fmu adapter (safetensors)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fmu.core.errors import UsageError

from . import panels as P
from .console import console


def convert(
    src: Path = typer.Argument(..., help="model.bin (authors), ip-adapter-faceid-plusv2_sd15.bin/.safetensors "
                               "(h94), or an fmu adapter."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (writes adapter.safetensors) or a "
                             ".safetensors path.", rich_help_panel=P.OUTPUT),
    lora: Path | None = typer.Option(None, "--lora", help="Separate LoRA file (e.g. "
                                     "ip-adapter-faceid-plusv2_sd15_lora.safetensors).", rich_help_panel=P.MODELS),
    base: str | None = typer.Option(None, "--base", help="Base model whose UNet layout to map onto (default: SD1.5).",
                                    rich_help_panel=P.MODELS),
    base_config: str | None = typer.Option(None, "--base-config", help="Config folder when --base is a single file.",
                                           rich_help_panel=P.MODELS),
) -> None:
    """Convert an IP-Adapter-layout checkpoint (+ LoRA) into fmu's adapter format.

    Pickles are read only with torch.load(weights_only=True); files carrying code are refused.
    `fmu generate --adapter` also accepts these files directly; converting once saves the work.

    Example:  fmu convert ip-adapter-faceid-plusv2_sd15.bin
              --lora ip-adapter-faceid-plusv2_sd15_lora.safetensors --out adapters/h94
    """
    for what, path in (("adapter", src), ("--lora", lora)):  # answered before the model libraries load
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{what} {path}: no such file")
    from fmu.core.model.convert import convert_file  # deferred: heavy (torch, diffusers); keeps the CLI start fast

    summary = convert_file(src, out, lora=lora, base=base, base_config=base_config)
    table = Table(title=f"converted {escape(src.name)}")
    table.add_column("part")
    table.add_column("value", justify="right")
    for part, n in summary["tensors"].items():
        table.add_row(f"{part} tensors", str(n))
    for key in ("id_embed_dim", "clip_hidden_dim", "num_tokens", "lora_rank"):
        table.add_row(key, str(summary["config"][key]))
    table.add_row("parameters", f"{summary['parameters']:,}")
    console.print(table)
    console.print(f"wrote {escape(str(summary['path']))}", soft_wrap=True)
