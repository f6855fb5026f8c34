"""The `fmu` command: one Typer app, one module per command family."""

from __future__ import annotations

import typer

from .console import quiet_libraries

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Face-MakeUpV2 batch processor: generate, score, train, finetune.")


def _register() -> None:
    from . import convert_cmd, demo_cmd, doctor_cmd, expand_cmd, generate_cmd, score_cmd, shade_cmd, train_cmd

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


_register()


def main() -> None:
    quiet_libraries()
    app()


if __name__ == "__main__":
    main()
