"""Running fmu's app in-process for tests: an exception other than the CLI's own exit is raised
instead of hiding in the result, so a crash fails the test with its traceback."""

from __future__ import annotations

from typer.testing import CliRunner

from fmu.app import app


def invoke(*args, env: dict | None = None):
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def generate(args):
    """`fmu generate ARGS`."""
    return invoke("generate", *args)
