"""The `fmu` command: one Typer app, one module per command family."""

from __future__ import annotations

from contextlib import contextmanager

import typer
from typer.core import TyperGroup

from core.errors import UsageError

from . import convert_cmd, demo_cmd, doctor_cmd, expand_cmd, generate_cmd, score_cmd, shade_cmd, train_cmd
from .console import error, quiet_libraries


@contextmanager
def usage_errors_exit_2():
    """A usage error, the core's or the command line's (a value not among the choices, a missing
    argument), ends every command the same way: one `error: ...` line on stderr, exit code 2."""
    try:
        yield
    except UsageError as exc:
        error(str(exc))
        raise typer.Exit(2) from None
    except typer.TyperException as exc:
        # Typer's refusals (a bad value, a missing argument, an unknown option) carry exit code 2;
        # a bare `fmu` prints its help instead (NoArgsIsHelpError: matched by name, as Typer's
        # own rich_utils does, since Typer does not export the class)
        if exc.exit_code != 2 or type(exc).__name__ == "NoArgsIsHelpError":
            raise
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        error(exc.format_message() + hint)
        raise typer.Exit(2) from None


class Commands(TyperGroup):
    """fmu's command group: usage errors of every command go through `usage_errors_exit_2`."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        with usage_errors_exit_2():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context):
        with usage_errors_exit_2():  # the command's own options are parsed in here, then it runs
            return super().invoke(ctx)


app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True,
                  help="Face-MakeUpV2 batch processor: generate, score, train, finetune.")

app.command("generate")(generate_cmd.generate)
app.command("validate")(generate_cmd.validate_manifest)
app.command("expand")(expand_cmd.expand)
app.command("shade")(shade_cmd.shade)
app.command("score")(score_cmd.score)
app.command("prepare")(train_cmd.prepare)
app.command("train")(train_cmd.train)
app.command("finetune")(train_cmd.finetune)
app.command("convert")(convert_cmd.convert)
app.command("doctor")(doctor_cmd.doctor)
app.command("demo-inputs")(demo_cmd.demo_inputs)


def main() -> None:
    quiet_libraries()
    app()


if __name__ == "__main__":
    main()
