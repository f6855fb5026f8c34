"""The `fmu` command: one Typer app, one module per command family."""

from __future__ import annotations

import os
from contextlib import contextmanager
from importlib import metadata

import typer

from fmu.core.errors import UsageError

from . import convert_cmd, demo_cmd, doctor_cmd, expand_cmd, generate_cmd, score_cmd, shade_cmd, train_cmd, weights_cmd
from .console import console, error, quiet_libraries
from .panels import Command, Group


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


def refuse_empty_out(args: list[str]) -> None:
    """`--out ""` reaches a command as Path("") == Path("."), the current folder, which nobody asked
    for: refused here, where the raw words are still seen."""
    for i, word in enumerate(args):
        if word in ("--out=", "-o=") or (word in ("--out", "-o") and i + 1 < len(args) and not args[i + 1].strip()):
            raise UsageError("--out is empty: give the file or folder to write")


class Commands(Group):
    """fmu's command group: usage errors of every command go through `usage_errors_exit_2`."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        with usage_errors_exit_2():
            refuse_empty_out(args)
            return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context):
        with usage_errors_exit_2():  # the command's own options are parsed in here, then it runs
            return super().invoke(ctx)


# add_completion: --install-completion / --show-completion (bash, zsh, fish, PowerShell)
app = typer.Typer(cls=Commands, add_completion=True, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Face-MakeUpV2 batch processor: generate, score, train, finetune.")


def _print_version(value: bool) -> None:
    if value:
        try:
            console.print(f"fmu {metadata.version('fmu')}")
        except metadata.PackageNotFoundError:  # run from a source tree that was never installed
            console.print("fmu (not installed: no package metadata)")
        raise typer.Exit(0)


@app.callback()
def _root(ctx: typer.Context,
          version: bool = typer.Option(False, "--version", "-V", callback=_print_version, is_eager=True,
                                       help="Print fmu's version and exit.")) -> None:
    """Face-MakeUpV2 batch processor: generate, score, train, finetune."""
    if ctx.invoked_subcommand != "weights":
        # only `fmu weights pull` may touch the network: every other command reads hub ids from the
        # local cache. Set before huggingface_hub is imported (it reads this once, at import), and
        # it also stops the hub client's own calls (a model lookup, its telemetry).
        os.environ["HF_HUB_OFFLINE"] = "1"


for name, function in (("generate", generate_cmd.generate), ("validate", generate_cmd.validate_manifest),
                       ("expand", expand_cmd.expand),
                       ("shade", shade_cmd.shade), ("score", score_cmd.score), ("prepare", train_cmd.prepare),
                       ("train", train_cmd.train), ("finetune", train_cmd.finetune),
                       ("convert", convert_cmd.convert), ("doctor", doctor_cmd.doctor),
                       ("demo-inputs", demo_cmd.demo_inputs)):
    app.command(name, cls=score_cmd.ScoreCommand if name == "score" else Command)(function)
app.add_typer(weights_cmd.app, name="weights")


def main() -> None:
    quiet_libraries()
    app()


if __name__ == "__main__":
    main()
