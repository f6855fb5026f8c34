"""`fmu generate` and `fmu validate`."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .console import console, err, error, progress_bar, shown


def generate(
    manifest: Path = typer.Argument(..., help="CSV or Parquet manifest (see manifests/README.md)."),
    out: Path = typer.Option(Path("runs/latest"), "--out", "-o", help="Output folder."),
    preset: Optional[str] = typer.Option("tiny", help="Built-in model preset (offline toy models)."),
    base_model: Optional[str] = typer.Option(None, help="SD1.5 diffusers folder or hub id (overrides --preset)."),
    adapter: Optional[Path] = typer.Option(None, help="fmu adapter checkpoint (.safetensors)."),
    image_encoder: Optional[str] = typer.Option(None, help="CLIP ViT-H/14 image encoder folder."),
    face_backend: Optional[str] = typer.Option(None, help="dlib | insightface (default: dlib for the tiny preset, else insightface)."),
    face_models: Optional[Path] = typer.Option(None, help="insightface models folder (buffalo_l layout)."),
    multi_face: str = typer.Option("best", help="best | largest | error: which face of a photo with "
                                   "several is used: the detector's most confident (the authors' "
                                   "choice), the biggest, or none (the row fails)."),
    face_crop: Optional[str] = typer.Option(None, help="aligned | wide: the face image the CLIP encoder "
                                            "sees; default: the style the adapter was trained with "
                                            "(wide for the authors' checkpoint, aligned for h94's and fmu's)."),
    devices: str = typer.Option("cpu", "--devices", help="auto | cpu | cuda | cuda:N | a list such as "
                                "cuda:0,cuda:1 (one worker process per entry; cpu,cpu works too)"),
    batch_size: int = typer.Option(4, min=1, help="Images denoised together."),
    steps: Optional[int] = typer.Option(None, min=1, help="Denoising steps (default 50; manifest may override)."),
    seed: int = typer.Option(0, help="Base seed for rows without one (row seed = base + row number)."),
    guidance_scale: float = typer.Option(7.5, help="Classifier-free guidance."),
    id_scale: float = typer.Option(0.5, help="Identity-channel strength (0 turns it off)."),
    s_scale: float = typer.Option(0.7, help="FaceID-PlusV2 shortcut weight."),
    shading_scale: float = typer.Option(0.5, help="ShadingNet (3D channel) conditioning scale."),
    no_shading: bool = typer.Option(False, "--no-shading", help="Run the identity channel alone."),
    frame: str = typer.Option("face", help="face | centre: the photo region an image shows. face (the "
                               "authors' demo): a square around the shading source's face, FRAME-SCALE "
                               "times its landmark box; centre: the photo's centre square."),
    frame_scale: float = typer.Option(5.0, help="Side of the face frame / side of the face's landmark box."),
    save_conditions: bool = typer.Option(False, help="Write each shading condition image."),
    renderer: str = typer.Option("auto", help="Shading renderer: auto | cpu | pytorch3d."),
    cache_dir: Optional[Path] = typer.Option(None, help="Face/shading cache (default OUT/.cache)."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads per worker; pin it for "
                                          "bit-identical images across 1 or N processes."),
    lora: Optional[Path] = typer.Option(None, help="LoRA written by `fmu finetune`, applied on top."),
    lora_scale: float = typer.Option(1.0, help="Weight of --lora."),
    adapter_lora: Optional[Path] = typer.Option(None, help="Separate LoRA file of an h94 FaceID-PlusV2 --adapter."),
    vae: Optional[str] = typer.Option(None, help="VAE override, e.g. a sd-vae-ft-mse folder."),
    scheduler: str = typer.Option("ddim", help="ddim | dpm++ | euler"),
    base_config: Optional[str] = typer.Option(None, help="Diffusers folder/hub id giving the configs of a single-file --base-model."),
    precision: str = typer.Option("auto", help="auto (fp16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16"),
    vae_slicing: bool = typer.Option(False, help="Decode the batch one image at a time (less memory)."),
    vae_tiling: bool = typer.Option(False, help="Decode in tiles (large images)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the UNet and ShadingNet."),
    offload: bool = typer.Option(False, "--offload", help="diffusers model CPU offload (CUDA only)."),
) -> None:
    """Turn a manifest of reference photos and prompts into images and results.parquet.

    Example:  fmu generate manifests/examples/basic.csv --out runs/a --steps 30
    Re-running the same command skips finished images and retries failed ones.
    Exit code: 0 all rows ok, 1 some rows failed, 2 usage error; 130 / 143 stopped by Ctrl-C /
    SIGTERM (finished images are kept and recorded; re-run to finish).
    """
    from core.errors import UsageError
    from core.runner.generate import GenerateConfig, run_generate

    device = devices.strip()
    cfg = GenerateConfig(
        manifest=manifest, out=out, preset=preset, base_model=base_model, adapter=adapter,
        image_encoder=image_encoder, face_backend=face_backend, face_models=face_models,
        multi_face=multi_face, face_crop=face_crop, device=device, batch_size=batch_size, seed=seed, steps=steps,
        guidance_scale=guidance_scale, id_scale=id_scale, s_scale=s_scale, shading_scale=shading_scale,
        shading=not no_shading, frame=frame, frame_scale=frame_scale, save_conditions=save_conditions, renderer=renderer, cache_dir=cache_dir,
        threads=threads, lora=lora, lora_scale=lora_scale, adapter_lora=adapter_lora, vae=vae,
        scheduler=scheduler, base_config=base_config, precision=precision, vae_slicing=vae_slicing,
        vae_tiling=vae_tiling, compile=compile, offload=offload)
    from core.faces.base import MULTI_FACE_POLICIES
    from core.faces.crops import CROP_STYLES

    if multi_face not in MULTI_FACE_POLICIES:
        err.print("[red]error:[/] --multi-face must be 'best', 'largest' or 'error'")
        raise typer.Exit(2)
    if face_crop is not None and face_crop not in CROP_STYLES:
        err.print("[red]error:[/] --face-crop must be 'aligned' or 'wide'")
        raise typer.Exit(2)
    try:
        with progress_bar() as progress, stop_on_sigterm():
            summary = run_generate(cfg, progress=progress)
    except UsageError as exc:
        error(str(exc))
        raise typer.Exit(2)
    except OSError as exc:  # disk full, permissions: finished rows are kept, re-running resumes
        error(f"{exc}; finished images and results are kept: re-run the same command "
                  "to resume")
        raise typer.Exit(1)
    if summary.interrupted:
        import signal

        err.print(f"[yellow]interrupted[/] ({signal.Signals(summary.interrupted).name}): {summary.ok} ok, "
                  f"{summary.failed} failed so far -> {out}/results.parquet; re-run the same command to "
                  "finish the rest")
        raise typer.Exit(summary.exit_code)
    done_before = f", {summary.skipped} of them finished earlier and kept" if summary.skipped else ""
    console.print(f"{summary.ok} ok, {summary.failed} failed{done_before} "
                  f"({summary.analyses} face analyses, {summary.seconds:.1f}s) -> {out}/results.parquet")
    if summary.failed:
        import polars as pl

        failed = pl.read_parquet(out / "results.parquet").filter(pl.col("status") == "failed")
        table = Table("id", "k", "reason", title="failed rows")
        for rid, k, reason in failed.select("id", "k", "error").head(20).iter_rows():
            table.add_row(shown(rid), str(k), shown(reason))
        console.print(table)
    raise typer.Exit(summary.exit_code)


@contextmanager
def stop_on_sigterm():
    """SIGTERM (a scheduler's stop, `kill`) ends the run like Ctrl-C does: finished images are
    merged into results.parquet and run.json is written before exiting."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        from core.errors import Interrupted

        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def validate_manifest(
    manifest: Path = typer.Argument(..., help="CSV or Parquet manifest."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer folder for the prompt-length check "
                                            "(default: the tiny preset's)."),
) -> None:
    """List every problem of every row; exit 1 when any row is unusable.

    Example:  fmu validate manifests/examples/basic.csv
    """
    from core.errors import UsageError
    from core.manifest import ERROR, read_manifest, validate

    try:
        df = read_manifest(manifest)
    except UsageError as exc:
        error(str(exc))
        raise typer.Exit(2)
    tok = _tokenizer(tokenizer)
    result = validate(df, manifest.parent, count_tokens=lambda s: len(tok(s).input_ids),
                      token_limit=tok.model_max_length)
    if result.problems:
        table = Table("row", "id", "column", "level", "problem", title=f"{manifest}")
        for p in result.problems:
            style = "red" if p.level == ERROR else "yellow"
            table.add_row(str(p.row), shown(p.id), shown(p.column), f"[{style}]{p.level}[/]", shown(p.reason))
        console.print(table)
    bad = len(result.errors_by_row())
    console.print(f"{result.total} rows: {result.total - bad} usable, {bad} unusable, "
                  f"{sum(p.level != ERROR for p in result.problems)} warnings")
    raise typer.Exit(1 if bad else 0)


def _tokenizer(path: Optional[str]):
    from transformers import CLIPTokenizer

    if path is None:
        from core.model.presets import ensure_preset

        base, _ = ensure_preset("tiny")
        return CLIPTokenizer.from_pretrained(base / "tokenizer")
    p = Path(path)
    sub = {"subfolder": "tokenizer"} if (p / "tokenizer").is_dir() else {}
    return CLIPTokenizer.from_pretrained(path, local_files_only=True, **sub)
