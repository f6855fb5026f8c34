"""The help panels options are grouped under (`rich_help_panel=`), one name per concern, the same in
every command (every option of every command sits in one: tests/test_cli_help.py), and the command
classes every command uses: flags shown without a `<bool>` hint."""

from __future__ import annotations

from typer.core import TyperCommand, TyperGroup

MODELS = "Models"
FACES = "Faces"
SAMPLING = "Sampling"
DEVICES = "Devices"
OUTPUT = "Output"
SPEED = "Speed"
GATING = "Quality gate"  # best-of-N: thresholds an image must meet, attempts, what happens to the rest
TRAINING = "Training"  # the training recipe: steps, batch, learning rate, loss weights, LoRA rank, seed
DATA = "Data"  # what a command reads besides models: training data, its masks and captions, images to score

ALL = (MODELS, FACES, SAMPLING, DEVICES, OUTPUT, SPEED, GATING, TRAINING, DATA)


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
