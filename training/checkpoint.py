"""Training checkpoints that resume exactly and never run code.

Layout: `OUT/checkpoints/checkpoint-00000020/`
- `adapter.safetensors` (full mode) or `lora.safetensors` (LoRA mode): the trainable weights;
- `optimizer.safetensors` + `optimizer.json`: the optimizer's tensors, and its other values;
- `scheduler.json`: the LR scheduler's state (plain numbers);
- `scaler.json`: the fp16 gradient scaler's state, when there is one;
- `rank_<r>.safetensors` + `rank_<r>.json`: each rank's random states (torch, CUDA, its training
  generator; numpy, Python) and data position;
- `COMPLETE`: the format, step, data position, world size and the data's digest, written last.

Every file is safetensors or JSON, so nothing in a checkpoint is ever unpickled: accelerate's
`save_state` pickles the LR scheduler (loaded back with `weights_only=False`, so a tampered file
ran its payload) and its RNG file needs numpy globals, which is why fmu writes its own. A file
that is not what it should be is refused with one line, before the model is built.

A checkpoint is written into `.checkpoint-<step>.tmp/` and renamed when whole, so a kill leaves
either the old checkpoint or the new one (and a stale temp folder the next save removes); a write
that fails (a full disk) removes the temp folder and raises `CheckpointWriteError`, one line naming
the checkpoint kept. The JSON files are read with bounds (size, no NaN, objects only) and the
optimizer's and scheduler's states must have the form of the run's own before they are loaded.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from fmu.core.errors import UsageError, first_line
from fmu.core.images import atomic_write_bytes
from fmu.core.model import adapter as A
from fmu.core.model import lora as L
from fmu.core.model.weights_io import fmu_file_meta

from .trainable import load_trained_weights, save_trained_weights, weights_name

FORMAT = "fmu-train-checkpoint/2"
PREFIX = "checkpoint-"
MARKER = "COMPLETE"
# fmu's JSON files are small (an SD1.5 optimizer's values: tens of kB): a bigger one is not its own
MAX_JSON_BYTES = 16 * 2**20
MAX_INT = 2**53  # integers in the states (steps, epochs, parameter indices) stay below this


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, say): the temp folder is removed and the
    previous checkpoint is untouched."""


def checkpoint_root(out: Path) -> Path:
    return Path(out) / "checkpoints"


def list_checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(out)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()
             and (p / MARKER).exists()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def remove_stale(out: Path) -> None:
    """Temp folders of checkpoints a kill cut short (called by the run that holds the lock on OUT)."""
    root = checkpoint_root(out)
    for tmp in root.glob(f".{PREFIX}*.tmp") if root.is_dir() else []:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_resume(out: Path, resume: str | None) -> Path | None:
    """`latest` -> the newest complete checkpoint of this run (None when there is none yet)."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(out)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / MARKER).is_file():
        raise UsageError(f"--resume {path}: not a complete fmu checkpoint (no {MARKER} file in it)")
    return path


# ---------------------------------------------------------------- saving

def save_checkpoint(accelerator, out: Path, step: int, position: int, generator: torch.Generator, keep: int, *,
                    model, mode: str, optimizer, lr_scheduler, data: dict | None = None) -> Path:
    """Collective: every rank calls it. Returns the checkpoint folder. `data` (`data_digest`'s rows
    and digest) lets a resume see that the prepared data changed under it."""
    final = checkpoint_root(out) / f"{PREFIX}{step:08d}"
    tmp = final.parent / f".{final.name}.tmp"
    rank = accelerator.process_index
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        tensors, values = _random_states(generator)
        atomic_write_bytes(tmp / f"rank_{rank}.safetensors", save(tensors))
        _write_json(tmp / f"rank_{rank}.json", {"step": step, "position": position, **values})
        if accelerator.is_main_process:
            save_trained_weights(model, mode, tmp / weights_name(mode), {"mode": mode, "steps": step})
            opt_tensors, opt_values = _split_optimizer(optimizer.state_dict())
            atomic_write_bytes(tmp / "optimizer.safetensors", save(opt_tensors))
            _write_json(tmp / "optimizer.json", opt_values)
            _write_json(tmp / "scheduler.json", lr_scheduler.state_dict())
            if accelerator.scaler is not None:
                _write_json(tmp / "scaler.json", accelerator.scaler.state_dict())
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _write_json(tmp / MARKER, {"format": FORMAT, "step": step, "position": position,
                                       "world_size": accelerator.num_processes, "data": data})
    except OSError as exc:  # disk full, quota, I/O error: the half-written folder goes, the last one stays
        shutil.rmtree(tmp, ignore_errors=True)
        kept = list_checkpoints(out)
        raise CheckpointWriteError(exc.errno, f"checkpoint {final} could not be written ({exc.strerror or exc}); "
                                   + (f"the last one, {kept[-1].name}, is kept: free space and continue with "
                                      "--resume latest" if kept else "no earlier checkpoint")) from None
    if accelerator.is_main_process:
        if final.exists():  # the same step saved again (a resumed run redid it)
            shutil.rmtree(final)
        os.rename(tmp, final)
        for old in list_checkpoints(out)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _write_json(path: Path, value) -> None:
    atomic_write_bytes(path, json.dumps(value).encode())


def _random_states(generator: torch.Generator) -> tuple[dict, dict]:
    tensors = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, py_gauss = random.getstate()
    values = {"numpy": [kind, keys.tolist(), pos, has_gauss, gauss], "python": [version, list(state), py_gauss]}
    return tensors, values


def _split_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state dict as safetensors tensors (`state.<param>.<name>`) and JSON values."""
    tensors, others = {}, {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                others.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "state": others}


# ---------------------------------------------------------------- loading

@dataclass
class SavedState:
    """A checkpoint read and checked, not yet applied (that needs the model)."""

    path: Path
    step: int
    position: int
    weights: Path
    optimizer: dict
    scheduler: dict
    scaler: dict | None
    rng_tensors: dict
    rng_values: dict
    data: dict | None = None   # the data digest it was trained on (None: written before fmu kept it)


def read_checkpoint(path: Path, rank: int, world_size: int, mode: str) -> SavedState:
    """Every file `save_checkpoint` wrote for this rank, through safetensors and JSON only; a
    missing or foreign file (a pickle in its place, say) is a UsageError naming it."""
    path = Path(path)
    info = _read_json(path / MARKER, path)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise UsageError(f"checkpoint {path} is not an {FORMAT} checkpoint (an older fmu wrote it with "
                         "accelerate's pickles, which are not loaded); start a new run, or resume it with "
                         "the fmu version that wrote it")
    if info.get("world_size", 1) != world_size:
        raise UsageError(f"checkpoint {path} was written by {info['world_size']} process(es); resuming with "
                         f"{world_size} would change the data order")
    weights = path / weights_name(mode)
    try:
        fmu_file_meta(weights, A.FORMAT if mode == "full" else L.FORMAT, "checkpoint weights")
    except UsageError as exc:
        raise UsageError(f"checkpoint {path}: {exc}") from None
    rank_values = _read_json(path / f"rank_{rank}.json", path)
    optimizer_values = _read_json(path / "optimizer.json", path)
    scaler = _read_json(path / "scaler.json", path) if (path / "scaler.json").exists() else None
    optimizer_tensors = _read_tensors(path / "optimizer.safetensors", path)
    try:
        optimizer = _join_optimizer(optimizer_tensors, optimizer_values)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"checkpoint {path}: optimizer.json is not what fmu writes ({first_line(exc)})") from None
    try:
        step, position = int(rank_values["step"]), int(rank_values["position"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"checkpoint {path}: rank_{rank}.json is not what fmu writes ({first_line(exc)})") from None
    return SavedState(path=path, step=step, position=position, weights=weights, optimizer=optimizer,
                      scheduler=_read_json(path / "scheduler.json", path), scaler=scaler,
                      rng_tensors=_read_tensors(path / f"rank_{rank}.safetensors", path), rng_values=rank_values,
                      data=info.get("data") if isinstance(info.get("data"), dict) else None)


def check_same_data(saved: SavedState, data: dict) -> None:
    """A resume continues the data order of the checkpoint's run: on other rows (the folder was
    prepared again) the position would point at other images, so it is refused with the difference."""
    before = saved.data
    if before is None or before.get("digest") == data["digest"]:
        return
    raise UsageError(f"checkpoint {saved.path} was trained on other data: {before.get('rows')} prepared rows "
                     f"(digest {str(before.get('digest'))[:12]}), the data folder now holds {data['rows']} "
                     f"(digest {data['digest'][:12]}); the data was prepared again since. Train into a new "
                     "--out, or prepare the old rows again to resume")


def apply_checkpoint(saved: SavedState, *, model, mode: str, optimizer, lr_scheduler, scaler,
                     generator: torch.Generator) -> None:
    """Put a read checkpoint into this run: weights, optimizer, scheduler, scaler, random states."""
    live = [("optimizer.json", saved.optimizer["param_groups"], optimizer.state_dict()["param_groups"]),
            ("scheduler.json", saved.scheduler, lr_scheduler.state_dict())]
    if scaler is not None and saved.scaler is not None:
        live.append(("scaler.json", saved.scaler, scaler.state_dict()))
    for name, value, own in live:
        if why := _unlike(value, own):
            raise UsageError(f"checkpoint {saved.path}: {name} is not what this run writes ({why})")
    try:
        load_trained_weights(model, mode, saved.weights)
        optimizer.load_state_dict(saved.optimizer)
        lr_scheduler.load_state_dict(saved.scheduler)
        if scaler is not None and saved.scaler is not None:
            scaler.load_state_dict(saved.scaler)
        _set_random_states(saved.rng_tensors, saved.rng_values, generator)
    except UsageError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise UsageError(f"checkpoint {saved.path} does not fit this run (another model, mode or "
                         f"optimizer?): {first_line(exc)}") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number fmu writes")


def _read_json(file: Path, checkpoint: Path) -> dict:
    """One JSON object fmu wrote: a file over MAX_JSON_BYTES, NaN / Infinity, nesting past Python's
    recursion limit or anything but an object is a UsageError naming the file."""
    try:
        size = file.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ValueError(f"{size} bytes, more than fmu writes ({MAX_JSON_BYTES})")
        value = json.loads(file.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
        if not isinstance(value, dict):
            raise ValueError(f"a JSON {type(value).__name__}, not an object")
        return value
    except FileNotFoundError:
        raise UsageError(f"checkpoint {checkpoint}: {file.name} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UsageError(f"checkpoint {checkpoint}: {file.name} is not the JSON fmu writes, refused unread "
                         f"({first_line(exc, 80)})") from None


def _unlike(saved, live, where: str = "") -> str | None:
    """How a state read from JSON differs in form from this run's own (`live`: the same object's
    state_dict): the same keys, list lengths and value kinds (booleans, integers, finite numbers,
    strings, None), integers bounded; None when it fits. A crafted file would otherwise be loaded
    as is and fail steps later, or set attributes it has no business setting."""
    here = where or "the top level"
    if isinstance(live, dict):
        if not isinstance(saved, dict):
            return f"{here} is not an object"
        if set(saved) != {str(k) for k in live}:
            return f"{here} has keys {sorted(saved)[:8]}, not {sorted(str(k) for k in live)[:8]}"
        return next((why for k, v in live.items() if (why := _unlike(saved[str(k)], v, f"{where}.{k}".lstrip(".")))),
                    None)
    if isinstance(live, (list, tuple)):
        if not isinstance(saved, list) or len(saved) != len(live):
            return f"{here} is not a list of {len(live)}"
        return next((why for i, v in enumerate(live) if (why := _unlike(saved[i], v, f"{where}[{i}]"))), None)
    if isinstance(live, bool) or live is None or isinstance(live, str):
        return None if type(saved) is type(live) else f"{here} is {saved!r:.40}, not a {type(live).__name__}"
    if isinstance(live, (int, float)):  # (bool is handled above)
        integer = isinstance(live, int)
        kinds = int if integer else (int, float)
        if isinstance(saved, bool) or not isinstance(saved, kinds) or not abs(saved) < (MAX_INT if integer else 1e30):
            return f"{here} is {saved!r:.40}, not {'an integer' if integer else 'a finite number'}"
    return None


def _read_tensors(file: Path, checkpoint: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise UsageError(f"checkpoint {checkpoint}: {file.name} is missing")
    try:
        return load_file(str(file), device="cpu")
    except Exception as exc:  # noqa: BLE001  safetensors' own error type is not exported stably
        raise UsageError(f"checkpoint {checkpoint}: {file.name} is not a safetensors file, refused unread "
                         f"({first_line(exc, 80)})") from None


def _join_optimizer(tensors: dict[str, torch.Tensor], values: dict) -> dict:
    """The optimizer's state dict from its tensors and its JSON values (the per-parameter values
    besides tensors are plain numbers; the parameter groups are checked against the run's own in
    `apply_checkpoint`)."""
    state: dict[int, dict] = {}
    for key, tensor in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    groups = values["param_groups"]
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise ValueError("param_groups is not a list of objects")
    for index, entries in values["state"].items():
        if not isinstance(entries, dict) or any(_unlike(v, 0.0) for v in entries.values()):
            raise ValueError(f"the state of parameter {index!r:.20} is not a set of numbers")
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": groups}


def _set_random_states(tensors: dict, values: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(tensors["torch"])
    generator.set_state(tensors["generator"])
    cuda = [tensors[f"cuda.{i}"] for i in range(len(tensors)) if f"cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = values["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, state, py_gauss = values["python"]
    random.setstate((version, tuple(state), py_gauss))
