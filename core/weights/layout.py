"""The weights folder `fmu weights pull` fills and `fmu generate --weights DIR` reads.

    DIR/weights.json            what was pulled: the set, each piece's source and files, the roles
    DIR/realistic-vision-v4/    --base-model      (diffusers folder)
    DIR/sd-vae-ft-mse/          --vae
    DIR/ip-adapter/models/image_encoder/          --image-encoder
    DIR/face-makeup-v2/adapter.safetensors        --adapter (authors' set, converted)
    DIR/ip-adapter-faceid/*.bin, *_lora.safetensors   --adapter, --adapter-lora (h94 set)
    DIR/insightface/models/buffalo_l/             --face-models DIR/insightface/models
    DIR/face-landmarker/face_landmarker.task      the Tasks face mesh (Python 3.13+), found by name
    DIR/clip-vit-large-patch14/, DIR/dino-vits16/, DIR/lpips/, DIR/inception/*.pth
                                fmu score's --clip-model, --dino-model, --lpips-weights, --fid-weights
                                (`--set scoring`, pulled beside a generate set)

A role is recorded only once its piece is complete, so a folder whose pull was cut short offers
what it has and names what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError
from ..home import fmu_home
from ..images import atomic_write_bytes
from .sets import DEFAULT_SET, SETS

RECORD = "weights.json"
FORMAT = "fmu-weights/1"
# generate's options a weights folder can fill, in the order a user reads them
ROLES = ("base_model", "vae", "image_encoder", "adapter", "adapter_lora", "face_models")
# `fmu score`'s options the scoring set fills (`fmu score --weights DIR`)
SCORE_ROLES = ("clip_model", "dino_model", "lpips_weights", "fid_weights")


def default_dir() -> Path:
    return fmu_home() / "weights"


def read_record(folder: Path, strict: bool = True) -> dict:
    """The folder's record ({} when there is none). One that is not the shape fmu writes (a hand
    edit, a truncated file) is a UsageError naming it, or {} when not `strict` (a pull rewrites it)."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and record.get("format") != FORMAT:
        return {}   # another tool's file of that name: not ours to read
    if _well_formed(record):
        return record
    if strict:
        raise UsageError(f"{path} is not a weights record fmu can read (malformed or edited); remove it and "
                         f"re-run `{pull_command(folder)}`")
    return {}


def _well_formed(record) -> bool:
    """The shape write_record writes: set a string, roles {name: relative path}, pieces {name: {...}}."""
    if not isinstance(record, dict):
        return False
    roles, pieces = record.get("roles", {}), record.get("pieces", {})
    return (isinstance(record.get("set", ""), str) and isinstance(roles, dict) and isinstance(pieces, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in roles.items())
            and all(isinstance(v, dict) for v in pieces.values()))


def write_record(folder: Path, record: dict) -> None:
    atomic_write_bytes(Path(folder) / RECORD, json.dumps({**record, "format": FORMAT}, indent=2).encode())


def pull_command(folder: Path, set_name: str | None = None) -> str:
    """The command that fills `folder` (shown wherever something is missing)."""
    where = "" if Path(folder) == default_dir() else f" --dir {folder}"
    return f"fmu weights pull --set {set_name or DEFAULT_SET}{where}"


def roles_of(folder: Path) -> dict[str, Path]:
    """generate option -> path, for the pieces of `folder` that are complete and still on disk."""
    folder = Path(folder).expanduser()
    record = read_record(folder)
    found = {}
    for role, relative in (record.get("roles") or {}).items():
        path = folder / relative
        if (role in ROLES or role in SCORE_ROLES) and path.exists():
            found[role] = path
    return found


def missing_roles(folder: Path, set_name: str | None = None) -> list[str]:
    """The roles set `set_name` (default: the folder's own, else the default set) provides that
    `folder` lacks."""
    folder = Path(folder).expanduser()
    set_name = set_name or read_record(folder).get("set") or DEFAULT_SET
    wanted = [role for piece in SETS[set_name] for role in piece.roles]
    have = roles_of(folder)
    return [role for role in wanted if role not in have]


def score_options(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """What `fmu score --weights DIR` fills in: (the scoring roles present, those missing); a
    missing one leaves its metric unavailable, its reason naming `pull_command(DIR, "scoring")`."""
    folder = Path(folder).expanduser()
    if not (folder / RECORD).is_file():
        raise UsageError(f"--weights {folder}: no {RECORD} there (fill it with `{pull_command(folder, 'scoring')}`)")
    found = {r: p for r, p in roles_of(folder).items() if r in SCORE_ROLES}
    return found, [r for r in SCORE_ROLES if r not in found]


def generate_options(folder: Path, need: list[str] | tuple[str, ...] = ROLES) -> dict[str, Path]:
    """What `fmu generate --weights DIR` fills in: the roles of `need` that the folder's set provides;
    a usage error naming the missing pieces and the command that fetches them otherwise."""
    folder = Path(folder).expanduser()
    if not (folder / RECORD).is_file():
        raise UsageError(f"--weights {folder}: no {RECORD} there (fill it with `{pull_command(folder)}`)")
    missing = [role for role in missing_roles(folder) if role in need]
    if missing:
        set_name = read_record(folder).get("set")
        raise UsageError(f"--weights {folder}: missing {', '.join(missing)}; run `{pull_command(folder, set_name)}` "
                         "(it resumes where it stopped)")
    return roles_of(folder)
