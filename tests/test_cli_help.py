"""A CLI that answers at once and reads well: help builds without the model libraries, options sit in
panels, flags show no `<bool>`, -h, --version, shell completion, one name for --devices.
(How fast it answers is measured by bench/cli_start.py, not timed here.)"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fmu import panels
from fmu.app import app

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
sys.argv = ["fmu", *json.loads(sys.argv[1])]
from fmu.app import main
try:
    main()
except SystemExit:
    pass
print("IMPORTED=" + json.dumps(sorted(m for m in ("torch", "diffusers", "transformers", "huggingface_hub")
                                      if m in sys.modules)))
"""


@pytest.mark.parametrize("args", [["--help"], ["generate", "--help"], ["weights", "pull", "-h"], ["score", "-h"]])
def test_help_imports_no_model_library(args):
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout
    imported = json.loads(proc.stdout.rsplit("IMPORTED=", 1)[1])
    assert imported == []


@pytest.mark.parametrize(("args", "message"), [
    (["generate", "/nonexistent/manifest.csv"], "manifest not found"),
    (["generate", "/nonexistent/manifest.csv", "--eta", "2"], "--eta 2.0: must be within [0, 1]"),
    (["generate", "/nonexistent/manifest.csv", "--frame-scale", "-1"], "--frame-scale -1.0: must be > 0"),
    (["train", "--data", "/nonexistent", "--out", "/nonexistent/run"], "no prepared training manifest"),
    (["finetune", "--from", "/nonexistent.safetensors", "--data", "/nonexistent"], "--data /nonexistent: neither"),
    (["prepare", "/nonexistent", "--out", "/nonexistent/data"], "/nonexistent: no such folder of images"),
    (["convert", "/nonexistent.bin", "--out", "/nonexistent/a"], "adapter /nonexistent.bin: no such file"),
])
def test_usage_errors_come_before_any_model_library(args, message, tmp_path):
    # the options are checked before torch / diffusers load: a usage error answers at once
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "FMU_HOME": str(tmp_path)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"error: {message}" in proc.stderr, proc.stderr
    assert json.loads(proc.stdout.rsplit("IMPORTED=", 1)[1]) == []


def _help(*args) -> str:
    result = CliRunner().invoke(app, [*args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_generate_help_groups_options_in_panels_and_shows_flags_without_a_type():
    text = _help("generate", "--help")
    for panel in ("Models", "Faces", "Sampling", "Devices", "Output", "Speed"):
        assert f"─ {panel} " in text, panel
    assert "<bool>" not in text
    assert "--no-shading" in text and "--compile" in text and "--weights" in text
    # a panel holds what its name says
    models = text.split("─ Models ")[1].split("╰")[0]
    assert "--base-model" in models and "--adapter" in models and "--steps" not in models


def _commands(command, path=()):
    """Every command and subcommand under `command` (groups included), with its path."""
    for name, sub in getattr(command, "commands", {}).items():
        yield (*path, name), sub
        yield from _commands(sub, (*path, name))


def test_every_option_of_every_command_sits_in_a_named_panel():
    # the root's own options (--version and Typer's completion pair) are the app's, not a command's
    commands = dict(_commands(typer.main.get_command(app)))
    assert {"generate", "train", "prepare", "finetune", "shade", "expand", "convert", "weights"} <= {
        path[0] for path in commands}
    assert ("weights", "pull") in commands and ("weights", "list") in commands
    outside, unknown, options = [], [], 0
    for path, command in commands.items():
        for param in command.params:
            if param.param_type_name != "option" or "--help" in param.opts:
                continue
            options += 1
            panel = getattr(param, "rich_help_panel", None)
            if panel is None:
                outside.append((" ".join(path), param.opts[0]))
            elif panel not in panels.ALL:
                unknown.append((" ".join(path), param.opts[0], panel))
    assert outside == [] and unknown == []
    # the walk reached every option the commands declare (the root's --version is app.py's one); an
    # Annotated alias (`RayCpusOpt = Annotated[float, typer.Option(...)]`) declares one per use
    sources = [f.read_text() for f in (ROOT / "fmu_cli").glob("*.py") if f.name != "app.py"]
    aliases = [m.group(1) for text in sources for m in re.finditer(r"^(\w+Opt) = Annotated\[", text, re.M)]
    uses = sum(len(re.findall(rf":\s*{alias}\b", text)) for alias in set(aliases) for text in sources)
    declared = sum(text.count("typer.Option(") for text in sources) - len(aliases) + uses
    assert options == declared
    # panel names are distinct, and help shows no default "Options" panel beyond -h itself
    assert len(set(panels.ALL)) == len(panels.ALL)
    train = _help("train", "--help")
    for panel in (panels.TRAINING, panels.MODELS, panels.DATA, panels.OUTPUT, panels.DEVICES, panels.SPEED):
        assert f"─ {panel} " in train, panel
    recipe = train.split(f"─ {panels.TRAINING} ")[1].split("╰")[0]
    assert "--lr " in recipe and "--lambda-id" in recipe and "--out" not in recipe
    options_panel = train.split("─ Options ")[1].split("╰")[0]
    assert "--help" in options_panel and "--lr" not in options_panel and "--data" not in options_panel


def test_h_is_help_everywhere_and_no_command_help_shows_bool():
    commands = typer.main.get_command(app).commands
    for name in commands:
        if name == "weights":
            continue
        text = _help(name, "-h")
        assert "Usage" in text and "<bool>" not in text, name
    assert _help("-h") == _help("--help")


def test_version_and_completion():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"fmu {version('fmu')}"
    assert "--install-completion" in _help("--help") and "--show-completion" in _help("--help")
    # Typer reads this switch when it builds the options, hence a fresh process: the shell is named
    # instead of detected from the parent process
    script = subprocess.run([sys.executable, "-m", "fmu.app", "--show-completion", "bash"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                         "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert script.returncode == 0, script.stderr
    assert "complete -o default -F" in script.stdout and "COMP_WORDS" in script.stdout


def test_devices_is_one_flag_name_in_every_command():
    named = {}
    for name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            if "device" in param.name:
                named[name] = param.opts
    assert named == {"generate": ["--devices"], "score": ["--devices"], "doctor": ["--devices"]}


def test_python_dash_m_fmu_is_the_one_entry_point_for_every_command():
    """`python -m fmu generate|train ...` (what `torchrun -m fmu ...` runs): the fmu command itself."""
    for command in ("generate", "train"):
        proc = subprocess.run([sys.executable, "-m", "fmu", command, "--help"], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "COLUMNS": "200"})
        assert proc.returncode == 0, proc.stderr
        assert f"-m fmu {command} [OPTIONS]" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "fmu", "no-such-command"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2
    # no second entry for training: generate and train launch the same way, as README "Many machines" says
    assert importlib.util.find_spec("fmu.train_entry") is None
    section = (ROOT / "README.md").read_text().split("## Many machines", 1)[1].split("\n## ", 1)[0]
    assert "torchrun --nproc_per_node 8 -m fmu generate m.csv" in section
    assert "torchrun --nproc_per_node 8 -m fmu train --data data/" in section
