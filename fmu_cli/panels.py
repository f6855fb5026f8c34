"""The help panels options are grouped under (`rich_help_panel=`), one name per concern, the same in
every command, and the command classes every command uses: flags shown without a `<bool>` hint."""

from __future__ import annotations

from typer.core import TyperCommand, TyperGroup

MODELS = "Models"
FACES = "Faces"
SAMPLING = "Sampling"
DEVICES = "Devices"
OUTPUT = "Output"
SPEED = "Speed"


def _plain_flags(params: list) -> list:
    """A flag takes no value, so Typer's `<bool>` type column only misleads: an empty metavar
    leaves the column blank (Typer prints the metavar in place of the type when one is set)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """One fmu command: its flags (and -h/--help) shown without a type."""

    def get_params(self, ctx):
        return _plain_flags(super().get_params(ctx))


class Group(TyperGroup):
    """A command group (`fmu`, `fmu weights`): its flags shown like a command's."""

    def get_params(self, ctx):
        return _plain_flags(super().get_params(ctx))
