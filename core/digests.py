"""Content digests of files, computed once per file version.

Rows that share a reference ask for its digest once per job; re-reading and hashing the file
each time costs a read of the whole image. A file is taken as unchanged while its path, inode,
size and modification time are (the rule `make` and rsync use).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict

_MAX_ENTRIES = 100_000
_memo: OrderedDict[tuple, str] = OrderedDict()
_lock = threading.Lock()


def bytes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_stamp(path: str | os.PathLike) -> str | None:
    """"size:mtime_ns" of a file, None when it is gone: the cheap test of "unchanged"."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes (OSError when it cannot be read)."""
    path = os.fspath(path)
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    with _lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key]
    with open(path, "rb") as stream:  # in chunks: adapters and model files run to gigabytes
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
    with _lock:
        _memo[key] = digest
        while len(_memo) > _MAX_ENTRIES:
            _memo.popitem(last=False)
    return digest
