"""`fmu weights pull`: fetch a weight set into the weights folder, resumably.

Hub pieces: huggingface_hub lists the repo's files at one commit and selects them with the allow
patterns (`filter_repo_objects`, as snapshot_download does); each file is fetched with huggingface_hub's
`http_get` into `<file>.incomplete`, which a later run resumes (HTTP Range), and an LFS file's sha256
is checked against the hub's. Files outside the Hub (the authors' RAR volumes on GitHub LFS,
insightface's model-zoo zip) take the same path, checked against the published LFS oid when known.
Progress: one rich task per piece, fed by a tqdm stand-in huggingface_hub accepts (`tqdm_class`).

`HF_ENDPOINT` (a mirror) and `HF_TOKEN` are honoured as huggingface_hub honours them.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from ..digests import file_digest
from ..errors import first_line
from ..safe_paths import UnsafePath, inside
from .layout import read_record, write_record
from .sets import ADDONS, BASE, SETS, HubPiece, UrlFile, UrlPiece

# a zip without a pinned size is unpacked only within these: insightface's packs unpack to ~1.2x
# their size and stay under 400 MB; a 3 MB zip that fills 300 MB is a bomb
UNZIP_MAX_BYTES = 2 * 2**30
UNZIP_MAX_RATIO = 20


class PullError(Exception):
    """One piece could not be fetched or unpacked; the message says why and what to do."""


@dataclass
class PieceResult:
    name: str
    ok: bool
    detail: str
    downloaded_bytes: int = 0


@dataclass
class PullSummary:
    folder: Path
    set_name: str
    pieces: list[PieceResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.pieces)


def _bar_class(progress, task, counter: list):
    """A stand-in for tqdm that feeds one rich task. huggingface_hub drives any class with tqdm's
    calls (`tqdm_class=`: it passes no tqdm-only arguments to a class that is not a tqdm); a real
    tqdm subclass would draw its own bar next to fmu's."""

    class Bytes:
        def __init__(self, *args, total=None, initial=0, desc=None, **kwargs):
            self.n, self.total = 0, total
            self.update(initial)   # the part of a resumed file that is already on disk

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n=1):
            if n:
                self.n += n
                counter[0] += n
                if progress is not None:
                    progress.advance(task, n)

        def _ignore(self, *args, **kwargs):
            pass

        close = refresh = set_description = set_description_str = set_postfix_str = _ignore
        update_transfer = set_transfer_postfix_str = _ignore

        @property
        def format_dict(self):
            return {"rate": None}

    return Bytes


def _task(progress, description: str, total: int | None):
    return progress.add_task(description, total=total) if progress is not None else None


def pull_hub(piece: HubPiece, folder: Path, progress=None) -> PieceResult:
    """The repo's files that the allow patterns select, at one commit, into FOLDER/<piece.folder>.

    huggingface_hub lists and selects them (`HfApi.repo_info` / `list_repo_tree`,
    `filter_repo_objects`: snapshot_download's own allow-pattern logic) and fetches each with
    `http_get` from its `hf_hub_url`. `hf_hub_download` is not used for the bytes: since
    huggingface_hub 2.x it deletes a cut-off part instead of resuming it in the next process (a
    multi-GB UNet would start over), and it does not check an LFS file's sha256."""
    # deferred: only pulls need the hub client
    from huggingface_hub import HfApi, hf_hub_url
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects

    api = HfApi()
    commit = api.repo_info(piece.repo_id, revision=piece.revision).sha
    tree = [f for f in api.list_repo_tree(piece.repo_id, recursive=True, revision=commit) if isinstance(f, RepoFile)]
    chosen = list(filter_repo_objects(tree, allow_patterns=list(piece.patterns), key=lambda f: f.path))
    unmatched = [p for p in piece.patterns if not p.endswith("/*") and not any(fnmatch(f.path, p) for f in chosen)]
    if unmatched:
        raise PullError(f"{piece.repo_id} has no {', '.join(unmatched)}: the repository changed; "
                        "fmu's weight list (core/weights/sets.py) needs an update")
    target = folder / piece.folder
    _check_listed(target, [f.path for f in chosen], piece.repo_id)
    files = [UrlFile(f.path, hf_hub_url(piece.repo_id, f.path, revision=commit),
                     f.lfs.sha256 if f.lfs is not None else None, f.size,
                     None if f.lfs is not None else f.blob_id) for f in chosen]
    fetched = _fetch_all(files, target, progress, f"{piece.name}: {piece.repo_id}")
    return PieceResult(piece.name, True, f"{piece.repo_id}@{commit[:10]}: {len(files)} files, {fetched[1]} fetched",
                       fetched[0])


def _check_listed(target: Path, paths: list[str], source: str) -> None:
    """Every listed path must stay inside `target` (core/safe_paths.py) before any file is opened:
    one bad entry fails the whole piece, naming it."""
    for path in paths:
        try:
            inside(target, path)
        except UnsafePath as exc:
            raise PullError(f"{source}: {exc}") from None


def _fetch_all(files: list[UrlFile], target: Path, progress, description: str) -> tuple[int, int]:
    """Every file into `target` under one progress task; (bytes downloaded, files fetched)."""
    _check_listed(target, [f.name for f in files], description)
    total = sum(f.size for f in files) if all(f.size is not None for f in files) else None
    task = _task(progress, description, total)
    counter, fetched = [0], 0
    for file in files:
        before = counter[0]
        if download_file(file, inside(target, file.name), progress, task, counter):
            fetched += 1
        elif progress is not None and file.size:  # already complete on disk
            progress.advance(task, file.size - (counter[0] - before))
    return counter[0], fetched


def download_file(file: UrlFile, dest: Path, progress=None, task=None, counter: list | None = None) -> bool:
    """`file.url` -> `dest` (False when it is already there, complete). The bytes go to
    `dest.incomplete` first and a later call resumes it from its size (HTTP Range); huggingface_hub's
    `http_get` also resumes within one call when the connection drops. sha256 checked when known."""
    # deferred: only pulls need it
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    counter = counter if counter is not None else [0]
    if dest.is_file() and (file.size is None or dest.stat().st_size == file.size):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".incomplete")
    have = partial.stat().st_size if partial.exists() else 0
    checked = file.sha256 is not None or file.git_sha1 is not None
    if have and (not checked or (file.size is not None and have > file.size)):
        partial.unlink()   # not a prefix of this file, or nothing could tell: start over
        have = 0
    # the hub's headers (a token for gated repos when one is configured) only for the hub
    headers = build_hf_headers() if "/resolve/" in file.url else None
    with open(partial, "ab") as fh:
        http_get(file.url, fh, resume_size=have, headers=headers, expected_size=file.size,
                 displayed_filename=file.name, tqdm_class=_bar_class(progress, task, counter))
    problem = _check_download(file, partial)
    if problem is not None:
        partial.unlink()
        if have:   # the resumed part was not this file's beginning: once more from the start
            return download_file(file, dest, progress, task, counter)
        raise PullError(f"{file.name}: {problem}; the partial file was removed, re-run to fetch it again")
    os.replace(partial, dest)
    return True


def _check_download(file: UrlFile, partial: Path) -> str | None:
    """What is wrong with the downloaded bytes, None when they are this file: the sha256, else the
    hub's git blob id, else the listed size; a JSON file (configs, tokenizer) must parse."""
    size = partial.stat().st_size
    if file.size is not None and size != file.size:
        return f"{size:,} bytes where the listing says {file.size:,}"
    if file.sha256 is not None and file_digest(partial) != file.sha256:
        return f"sha256 differs from the published {file.sha256[:12]}…"
    if file.sha256 is None and file.git_sha1 is not None:
        blob = hashlib.sha1(b"blob %d\0" % size)
        with open(partial, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                blob.update(chunk)
        if blob.hexdigest() != file.git_sha1:
            return f"git blob id differs from the listed {file.git_sha1[:12]}…"
    if file.name.endswith(".json"):
        try:
            json.loads(partial.read_bytes())
        except ValueError as exc:
            return f"not valid JSON ({first_line(exc, 120)})"
    return None


def _unzip(archive: Path, into: Path) -> None:
    """An insightface pack zip -> into/ (the pack's files directly inside, as insightface lays it out)."""
    into.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        _check_listed(into, [n.rstrip("/") for n in zf.namelist() if n.rstrip("/")], archive.name)
        unpacked = sum(info.file_size for info in zf.infolist())  # zipfile stops each member at its size
        if unpacked > UNZIP_MAX_BYTES or unpacked > UNZIP_MAX_RATIO * max(archive.stat().st_size, 1):
            raise PullError(f"{archive.name}: unpacks to {unpacked:,} bytes from {archive.stat().st_size:,} "
                            f"(the bound is {UNZIP_MAX_BYTES:,} bytes and {UNZIP_MAX_RATIO}x); not unpacked")
        zf.extractall(into)
    nested = into / into.name   # some packs wrap their files in a folder of their own name
    if nested.is_dir():
        for item in nested.iterdir():
            os.replace(item, into / item.name)
        nested.rmdir()


def manual_unpack_help(piece: UrlPiece, target: Path) -> str:
    first = target / piece.files[0].name
    return (f"install a RAR extractor (`apt-get install unar`, or unrar / 7-Zip with RAR support) and re-run "
            f"`fmu weights pull`, or unpack by hand: `unar -o {target / 'unpacked'} {first}` then "
            f"`fmu convert {target / 'unpacked'}/<...>/model.bin --out {target / 'adapter.safetensors'}`")


def _unrar_and_convert(piece: UrlPiece, target: Path, base: Path | None) -> str:
    """The volumes -> target/unpacked/ (rarfile, which runs the first RAR extractor it finds: unrar,
    unar or 7-Zip; bsdtar is left out, it reads no multi-volume archive) -> model.bin -> the fmu
    adapter. A model.bin already unpacked there (by hand) is converted without extracting again."""
    import rarfile  # deferred: only the authors' set needs it

    from ..model.convert import convert_file  # deferred: converting imports torch and diffusers

    out = target / "unpacked"
    found = sorted(out.rglob("*.bin")) if out.is_dir() else []
    if not found:
        first = target / piece.files[0].name
        try:
            rarfile.tool_setup(bsdtar=False)
        except rarfile.RarCannotExec:
            raise PullError("the RAR volumes are downloaded but no extractor is installed: "
                            + manual_unpack_help(piece, target)) from None
        try:
            with rarfile.RarFile(first) as archive:
                _check_listed(out, [n.rstrip("/") for n in archive.namelist() if n.rstrip("/")], first.name)
                archive.extractall(out)
        except (rarfile.Error, OSError) as exc:
            raise PullError(f"cannot unpack {first.name}: {first_line(exc)}; " + manual_unpack_help(piece, target)) \
                from None
        found = sorted(out.rglob("*.bin"))
        if not found:
            raise PullError(f"{first.name} holds no .bin checkpoint")
    model_bin = next((p for p in found if p.name == "model.bin"), found[0])
    base_ok = base is not None and (base / "unet" / "config.json").is_file()
    summary = convert_file(model_bin, target / "adapter.safetensors", base=base if base_ok else None)
    return f"{model_bin.relative_to(target)} converted ({summary['parameters']:,} parameters)"


def pull_url(piece: UrlPiece, folder: Path, progress=None, base: Path | None = None) -> PieceResult:
    target = folder / piece.folder
    downloaded, _ = _fetch_all(list(piece.files), target, progress,
                               f"{piece.name}: {', '.join(f.name for f in piece.files)}")
    if piece.unpack == "zip":
        for file in piece.files:
            _unzip(target / file.name, target / "models" / Path(file.name).stem)
        detail = "unpacked into models/"
    elif piece.unpack == "rar+convert":
        detail = _unrar_and_convert(piece, target, base)
    elif piece.unpack == "none":
        detail = f"{', '.join(f.name for f in piece.files)} in {piece.folder}/"
    else:
        raise ValueError(f"unknown unpack step {piece.unpack!r}")
    return PieceResult(piece.name, True, detail, downloaded)


def pull_pieces(pieces: tuple, folder: Path, set_name: str, progress=None) -> PullSummary:
    """Fetch `pieces` into `folder`; every piece is tried (one failing does not stop the others),
    and the record names the roles of the pieces that are complete."""
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    summary = PullSummary(folder, set_name)
    record = read_record(folder, strict=False)   # a malformed record is rewritten
    sources = dict(record.get("pieces") or {})
    roles = {}
    base = folder / BASE.folder   # the converted adapter is mapped onto the pulled base's UNet layout
    for piece in pieces:
        try:
            if isinstance(piece, HubPiece):
                result = pull_hub(piece, folder, progress)
                sources[piece.name] = {"repo_id": piece.repo_id, "revision": piece.revision,
                                       "files": list(piece.patterns), "licence": piece.licence}
            else:
                result = pull_url(piece, folder, progress, base)
                sources[piece.name] = {"urls": [f.url for f in piece.files], "licence": piece.licence}
        except PullError as exc:
            result = PieceResult(piece.name, False, str(exc))
        except Exception as exc:  # noqa: BLE001  network/HTTP/disk errors of any library: this piece failed, go on
            result = PieceResult(piece.name, False, f"{type(exc).__name__}: {first_line(exc, 300)}")
        summary.pieces.append(result)
        if result.ok:
            roles.update({role: str(Path(piece.folder) / rel) if rel else piece.folder
                          for role, rel in piece.roles.items()})
    # roles of this set only: an adapter LoRA of an earlier h94 pull must not ride on the authors' adapter.
    # An add-on set (scoring) keeps the folder's set and every role it has; the add-ons' roles survive
    # a later pull of a generate set.
    old_roles = record.get("roles") or {}
    addon_roles = {role for name in ADDONS for piece in SETS[name] for role in piece.roles}
    if set_name in ADDONS:
        kept, folder_set = dict(old_roles), record.get("set")
    else:
        wanted = {role for piece in SETS.get(set_name, pieces) for role in piece.roles}
        kept = {r: p for r, p in old_roles.items()
                if r in addon_roles or (r in wanted and record.get("set") == set_name)}
        folder_set = set_name
    write_record(folder, {"set": folder_set, "roles": {**kept, **roles}, "pieces": sources})
    return summary


def pull(set_name: str, folder: Path, only: tuple[str, ...] | None = None, progress=None) -> PullSummary:
    pieces = SETS[set_name]
    if only:
        pieces = tuple(p for p in pieces if p.name in only)
    return pull_pieces(pieces, folder, set_name, progress)
