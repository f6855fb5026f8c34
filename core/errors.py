"""Errors that end one row, never the run: each carries a short machine-readable kind."""


class RowError(Exception):
    """A problem confined to one manifest row or one image; the run goes on."""

    kind = "error"

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        if kind is not None:
            self.kind = kind

    @property
    def reason(self) -> str:
        return f"{self.kind}: {self}"


class ImageError(RowError):
    kind = "bad_image"


class NoFaceError(RowError):
    kind = "no_face"


class MultiFaceError(RowError):
    kind = "multiple_faces"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: stop, keep what is finished, write the run record, exit 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class UsageError(Exception):
    """A problem with how fmu was called (exit code 2)."""


def row_reason(exc: BaseException, kind: str) -> str:
    """`kind: message` on one line for a row's error: a RowError's own reason, `io_error` for an
    OSError, else `kind` with the exception's type."""
    if isinstance(exc, RowError):
        return exc.reason
    if isinstance(exc, OSError):
        return f"io_error: {exc}".splitlines()[0]
    return f"{kind}: {type(exc).__name__}: {exc}".splitlines()[0]


def first_line(exc: BaseException, limit: int | None = 200) -> str:
    """An exception as one short line for a message: its first line, else its type's name."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if limit is None else line[:limit]
