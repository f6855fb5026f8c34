"""One rule for every path that comes from outside (a hub listing, an archive or zip member): it is
used only if it stays inside the folder it is written into.

The rule is pip's, huggingface_hub's and tarfile's `data` filter's: the listed path is relative, has
no `..` part after normalisation, and `(root / p).resolve()` lies under `root.resolve()` (a symlink
already in the folder cannot lead out). Backslashes, drive letters, NUL and URL-encoded parts are
refused outright; a URL-encoded path is checked decoded as well (a server or a later tool may decode
`%2e%2e` into `..`).
"""

from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath
from urllib.parse import unquote


class UnsafePath(ValueError):
    """A listed path that would land outside its folder; the message names it."""


def _refuse(listed: str, why: str) -> UnsafePath:
    return UnsafePath(f"refusing the listed path {listed!r}: {why}")


def inside(root: Path, listed: str) -> Path:
    """`root / listed`, checked before any file is opened; raises UnsafePath naming the path."""
    if not isinstance(listed, str) or not listed or len(listed) > 4096:
        raise _refuse(str(listed)[:200], "empty or longer than 4096 characters")
    for form in dict.fromkeys((listed, unquote(listed))):
        if "\\" in form or "\0" in form:
            raise _refuse(listed, "it holds a backslash or NUL")
        if form.startswith("/") or (len(form) > 1 and form[1] == ":"):
            raise _refuse(listed, "it is absolute")
        if ".." in PurePosixPath(form).parts or posixpath.normpath(form).startswith(".."):
            raise _refuse(listed, "it climbs out with '..'")
    base = Path(root).resolve()
    dest = (base / listed).resolve()
    if dest == base or not dest.is_relative_to(base):
        raise _refuse(listed, f"it resolves outside {base}")
    return Path(root) / listed
