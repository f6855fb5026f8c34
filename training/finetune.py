"""`fmu finetune`: a new LoRA on top of an fmu adapter, trained on a small set of faces.

The loop, losses and checkpoints are `trainer.run_training` with `mode="lora"`: the adapter's
projection, IP attention, identity LoRA and ShadingNet stay frozen; only a NEW peft LoRA
(`fmu_ft`, rank configurable) trains, and the result is a LoRA file that
`FaceMakeUp.load_lora_weights` (and `fmu generate --lora`) puts back on top of the same adapter.
A plain image folder is prepared automatically into OUT/data (captions from sidecar .txt files,
no masks).
"""

from __future__ import annotations

from pathlib import Path

from fmu.core.errors import UsageError


def check_data(data: Path) -> None:
    """UsageError when `--data` is neither a manifest file nor a folder."""
    if not (Path(data).is_file() or Path(data).is_dir()):
        raise UsageError(f"--data {data}: neither a folder nor a manifest")


def check_sources(init_adapter: Path, data: Path) -> None:
    """UsageError when the adapter to start from or the data do not exist (the cheap checks, made
    before anything heavy loads; what they hold is checked by preflight and prepare)."""
    check_data(data)
    if not Path(init_adapter).is_file():
        raise UsageError(f"--from {init_adapter}: no such file (an fmu adapter checkpoint)")


def needs_preparation(data: Path) -> bool:
    """Is `data` a plain folder of images (prepared into OUT/data by `prepared_manifest`)?"""
    data = Path(data)
    return data.is_dir() and not (data / "train.parquet").is_file()


def prepared_manifest(data: Path, out: Path, face_backend: str = "dlib", resolution: int = 512) -> Path:
    """The prepared manifest for `data`: itself, DATA/train.parquet, or a fresh preparation of
    an image folder into OUT/data (cached, so re-running does not analyse again)."""
    # deferred: heavy (polars, face models, core.shading); only a plain image folder needs preparing
    from .prepare import PrepareConfig, run_prepare

    data = Path(data)
    if data.is_file():
        return data
    if (data / "train.parquet").is_file():
        return data / "train.parquet"
    check_data(data)
    summary = run_prepare(PrepareConfig(source=data, out=Path(out) / "data", face_backend=face_backend,
                                        resolution=resolution))
    if summary.ok == 0:
        raise UsageError(f"no usable face in {data} (see {summary.report})")
    return summary.manifest
