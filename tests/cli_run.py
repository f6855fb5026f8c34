"""Running fmu's app in-process for tests: an exception other than the CLI's own exit is raised
instead of hiding in the result, so a crash fails the test with its traceback. The console is
wide: rich wraps printed lines at its width, and a long temp path would move a line break into
the words a test looks for."""

from __future__ import annotations

from typer.testing import CliRunner

from fmu.app import app
from fmu.console import console

WIDE = 1000


def invoke(*args, env: dict | None = None):
    console.width = WIDE
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def generate(args):
    """`fmu generate ARGS`."""
    return invoke("generate", *args)
