"""One source of options: generate's defaults live in one place, every closed choice is an enum
built from the core's own tuple (listed in --help, refused by Typer with exit 2), and every
command's usage errors end the same way."""

import dataclasses
import inspect
import json
import typing
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from fmu.app import app
from fmu.core.runner.config import (
    DEFAULT_OUT,
    DEFAULTS,
    GROUPS,
    OPTION_GROUP,
    EngineOptions,
    GenerateConfig,
    LoadOptions,
    SamplingOptions,
    SourceOptions,
)
from fmu.core.runner.gating import Gate


def _params(command: str) -> dict:
    return {p.name: p for p in typer.main.get_command(app).commands[command].params}


def _plain(value):
    return getattr(value, "value", value)


def test_generate_flags_default_to_the_run_config():
    params = _params("generate")
    flag_of = {"device": "devices", "shading": "no_shading"}
    options = {name: default for name, default in vars(DEFAULTS).items() if name != "prefix"}  # not a flag
    # every option of the run but the prompt prefix is a flag; every flag but the manifest and how
    # often progress is logged (the console's, not the run's) an option
    assert {flag_of.get(name, name) for name in options} == set(params) - {"manifest", "progress_interval"}
    for name, default in options.items():
        flag = params[flag_of.get(name, name)]
        expected = (not default) if name == "shading" else default
        assert _plain(flag.default) == expected, name


def test_image_defaults_are_the_authors_demo():
    """DESIGN.md §3: 50 DDIM steps, CFG 7.5, id_scale 0.5, s_scale 0.7, ControlNet scale 0.5,
    prefix "best quality"; the face frame is 5x the landmark box."""
    cfg = GenerateConfig(manifest=Path("m.csv"))
    sampling = cfg.sampling
    assert (sampling.steps, sampling.guidance_scale, sampling.id_scale, sampling.s_scale,
            sampling.shading_scale) == (50, 7.5, 0.5, 0.7, 0.5)
    assert (cfg.load.scheduler, cfg.source.prefix, cfg.source.frame_scale) == ("ddim", "best quality", 5.0)


def test_choices_are_the_cores_own_tuples():
    from fmu import choices
    from fmu.core.faces import BACKENDS, MULTI_FACE_POLICIES
    from fmu.core.faces.crops import CROP_STYLES
    from fmu.core.model import load
    from fmu.core.model.settings import PRECISIONS, SCHEDULERS
    from fmu.core.runner.conditions import FRAMES, parse_frame
    from fmu.core.shading.render import BACKENDS as RENDERERS

    def names(enum):
        return [m.value for m in enum]

    assert names(choices.FaceBackend) == list(BACKENDS)
    assert names(choices.MultiFace) == list(MULTI_FACE_POLICIES)
    assert names(choices.FaceCrop) == list(CROP_STYLES)
    assert names(choices.Renderer) == list(RENDERERS)
    assert names(choices.Scheduler) == list(SCHEDULERS) == list(load.SCHEDULERS)
    assert [parse_frame(f) for f in names(choices.Frame)] == [*FRAMES, "centre"]
    # the precisions offered are exactly the ones the loader turns into a dtype, plus auto
    assert set(names(choices.Precision)) == set(PRECISIONS) == {"auto", *load.PRECISIONS}
    for name in SCHEDULERS:  # every offered sampler is one the loader builds
        from diffusers import DDIMScheduler

        assert load.make_scheduler(name, DDIMScheduler().config) is not None


@pytest.mark.parametrize("args, option", [
    (["generate", "m.csv", "--scheduler", "heun"], "--scheduler"),
    (["generate", "m.csv", "--precision", "fp8"], "--precision"),
    (["generate", "m.csv", "--frame", "side"], "--frame"),
    (["generate", "m.csv", "--multi-face", "first"], "--multi-face"),
    (["generate", "m.csv", "--face-backend", "vgg"], "--face-backend"),
    (["shade", "a.png", "--out", "c.png", "--renderer", "opengl"], "--renderer"),
    (["shade", "a.png", "--out", "c.png", "--face-backend", "vgg"], "--face-backend"),
    (["prepare", "imgs", "--out", "d", "--renderer", "gl"], "--renderer"),
    (["train", "--data", "d", "--mixed-precision", "fp8"], "--mixed-precision"),
    (["train", "--data", "d", "--face-crop", "tight"], "--face-crop"),
    (["finetune", "--from", "a", "--data", "d", "--face-backend", "vgg"], "--face-backend"),
    (["doctor", "--face-backend", "vgg"], "--face-backend"),
    (["score", "run", "--metrics", "facesim,nope"], "--metrics"),
    (["score", "run", "--face-backend", "dlib,vgg"], "--face-backend"),
])
def test_a_value_outside_the_choices_is_refused_by_typer(tmp_path, args, option):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: Invalid value for '{option}'"), result.output
    assert "is not one of" in lines[0]


@pytest.mark.parametrize("command, choices", [
    ("generate", ["best|largest|error", "aligned|wide", "face|centre|center", "auto|cpu|pytorch3d",
                  "ddim|dpm++|euler", "auto|fp32|fp16|bf16", "dlib|insightface"]),
    ("train", ["no|bf16|fp16", "aligned|wide"]),
    ("score", ["facesim, clip, dino, lpips, fid, consistency, or all", "dlib, insightface"]),
])
def test_help_lists_the_choices(command, choices):
    text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"}).output
    for listed in choices:
        assert listed in text, listed


def test_score_help_names_every_metric_and_backend():
    from fmu.core.faces import BACKENDS
    from fmu.core.scoring import registered

    command = typer.main.get_command(app).commands["score"]
    command.get_help(click.Context(command, info_name="score"))  # the help is built as `fmu score -h` shows it
    # the help shown reads the metrics registry: every metric's name and help line
    (metrics,) = [p for p in command.params if p.name == "metrics"]
    names = [m.name for m in registered()]
    assert names[:6] == ["facesim", "clip", "dino", "lpips", "fid", "consistency"]
    assert metrics.help.startswith(f"Comma list of {', '.join(names)}, or all. facesim: ")
    for m in registered():
        assert f"{m.name}: {m.help}" in metrics.help
    params = _params("score")
    assert params["face_backend"].help.startswith(f"Face backend(s) for FaceSim: {', '.join(BACKENDS)} or a")


@pytest.mark.parametrize("args, message", [
    (["validate", "absent.csv"], "error: manifest not found"),
    (["generate", "absent.csv"], "error: manifest not found"),
    (["score"], "error: give either RUN_DIR or --images DIR --manifest FILE"),
    (["finetune", "--from", "a.safetensors", "--data", "absent"],
     "error: --data absent: neither a folder nor a manifest"),
    (["generate"], "error: Missing argument 'manifest'."),
    (["nonsense"], "error: No such command 'nonsense'."),
])
def test_usage_errors_of_every_command_are_one_line_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_run_generate_leaves_the_config_it_was_given(tmp_path, tiny_preset):
    """The run resolves `center` and the default face backend into its own copy; the caller's
    config is unchanged and run.json records what the run used."""
    from fmu.core.runner.generate import run_generate

    (tmp_path / "m.csv").write_text("id,reference,prompt\na,missing.png,a photo\n")
    cfg = GenerateConfig.from_options(tmp_path / "m.csv", out=tmp_path / "out", frame="center", steps=2)
    given = json.dumps(cfg.flat(), default=str)
    summary = run_generate(cfg)
    assert (summary.total, summary.failed) == (1, 1)  # the row's reference is missing
    assert json.dumps(cfg.flat(), default=str) == given and cfg.source.frame == "center"
    recorded = json.loads((tmp_path / "out" / "run.json").read_text())
    assert recorded["config"]["frame"] == "centre" and recorded["config"]["face_backend"] == "dlib"
    # recorded flat, by the options' own names (what `fmu score` and a re-run read)
    assert set(recorded["config"]) == set(cfg.flat()) == {"manifest", "out", *OPTION_GROUP}
    assert recorded["config"]["steps"] == 2 and recorded["config"]["out"] == str(tmp_path / "out")


def test_the_progress_bar_shows_time_left():
    from rich.progress import TimeRemainingColumn

    from fmu.console import progress_bar

    bar = progress_bar()
    assert any(isinstance(column, TimeRemainingColumn) for column in bar.columns)
    assert progress_bar(transient=True).live.transient


def test_every_option_lives_in_a_group():
    """GenerateConfig holds the manifest, the output folder and one object per group: no loose
    option a consumer could read past its group."""
    config_fields = {f.name: f for f in dataclasses.fields(GenerateConfig)}
    assert set(config_fields) == {"manifest", "out", "source", "load", "sampling", "output", "engine", "gate"}
    cfg = GenerateConfig(manifest=Path("m.csv"))
    for group, cls in GROUPS.items():
        assert type(getattr(cfg, group)) is cls, group
    assert (GROUPS["load"], GROUPS["sampling"], GROUPS["source"], GROUPS["engine"], GROUPS["gate"]) == (
        LoadOptions, SamplingOptions, SourceOptions, EngineOptions, Gate)
    # each flat option name is exactly one group's field
    names = [f.name for cls in GROUPS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)) == len(OPTION_GROUP) == 52
    assert set(vars(DEFAULTS)) == {*OPTION_GROUP, "out"} and DEFAULTS.out == DEFAULT_OUT


def test_from_options_puts_each_flat_option_in_its_group():
    defaults = GenerateConfig(manifest=Path("m.csv"))
    for name, group in OPTION_GROUP.items():
        marker = object()
        cfg = GenerateConfig.from_options("m.csv", **{name: marker})
        assert getattr(getattr(cfg, group), name) is marker, name
        assert cfg.flat()[name] is marker
        for other in GROUPS:  # nothing else moved
            if other != group:
                assert getattr(cfg, other) == getattr(defaults, other), (name, other)
    cfg = GenerateConfig.from_options("m.csv", out="runs/x", steps=3, device="cuda:1", writer="hf", max_tries=2,
                                      renderer="cpu", vae_tiling=True)
    assert (cfg.manifest, cfg.out) == (Path("m.csv"), Path("runs/x"))
    assert (cfg.sampling.steps, cfg.engine.device, cfg.output.writer, cfg.gate.max_tries) == (3, "cuda:1", "hf", 2)
    assert (cfg.source.renderer, cfg.load.vae_tiling) == ("cpu", True)
    with pytest.raises(TypeError, match="unknown generate options bogus, stepz"):
        GenerateConfig.from_options("m.csv", stepz=3, bogus=1)


def test_the_command_line_builds_the_same_groups(tmp_path, monkeypatch):
    """`fmu generate`'s flags, left at their defaults, make the config `from_options` makes;
    each flag lands in its group."""
    from fmu.core.errors import UsageError
    from fmu.core.runner import preflight

    seen = []

    def stop(cfg, log=None):  # the config the command built, before anything runs
        seen.append(cfg)
        raise UsageError("stopped by the test")

    monkeypatch.setattr(preflight, "check_generate", stop)
    out = tmp_path / "out"
    for extra in ([], ["--no-shading", "--devices", " cpu,cpu ", "--steps", "7", "--min-id-sim", "0.3",
                       "--multi-face", "largest", "--writer", "hf", "--vae-tiling"]):
        result = CliRunner().invoke(app, ["generate", "m.csv", "--out", str(out), *extra])
        assert result.exit_code == 2 and "stopped by the test" in result.output, result.output
    assert seen[0] == GenerateConfig.from_options(Path("m.csv"), out=out)
    assert seen[1] == GenerateConfig.from_options(Path("m.csv"), out=out, shading=False, device="cpu,cpu", steps=7,
                                                  min_id_sim=0.3, multi_face="largest", writer="hf", vae_tiling=True)
    assert (seen[1].load.shading, seen[1].engine.device, seen[1].gate) == (False, "cpu,cpu", Gate(min_id_sim=0.3))


def test_consumers_take_their_group_whole():
    """The model loader takes the load options, the checks take the groups they check, the
    worker the config whose groups it hands on: never a field list."""
    from fmu.core.runner import preflight, worker

    def hints(function):
        return typing.get_type_hints(function)

    assert list(inspect.signature(worker.load_model).parameters)[:2] == ["load", "device"]
    assert hints(worker.load_model)["load"] is LoadOptions
    assert hints(worker.Worker.__init__)["cfg"] is GenerateConfig
    assert hints(preflight.check_model_files)["load"] is LoadOptions
    assert hints(preflight.check_model_files)["source"] is SourceOptions
    assert hints(preflight.check_devices)["load"] is LoadOptions
    assert hints(preflight.check_renderer)["source"] is SourceOptions
    settings = SamplingOptions(steps=9, shading_scale=0.4).settings(64, shading=False)
    assert (settings.steps, settings.width, settings.shading_scale) == (9, 64, 0.0)
