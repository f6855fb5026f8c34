"""Training settings: types from TOML, up-front checks, precedence of flags / TOML / defaults."""

from __future__ import annotations

import typing
from dataclasses import fields
from pathlib import Path

import pytest
from diffusers.optimization import SchedulerType
from typer.testing import CliRunner

from fmu.core.errors import UsageError
from fmu.training.config import TrainConfig, load_config


def _toml(tmp_path, text: str) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(text)
    return path


def test_wrong_type_in_toml_names_the_key_and_the_type(tmp_path):
    with pytest.raises(UsageError, match=r"^setting batch_size = 'eight': expected an integer$"):
        load_config(_toml(tmp_path, '[train]\nbatch_size = "eight"\n'))
    with pytest.raises(UsageError, match=r"batch_size = 2\.0: expected an integer"):
        load_config(_toml(tmp_path, "batch_size = 2.0\n"))        # ints given as floats: refused
    with pytest.raises(UsageError, match=r"batch_size = True: expected an integer"):
        load_config(_toml(tmp_path, "batch_size = true\n"))
    with pytest.raises(UsageError, match=r"lr = 'fast': expected a number"):
        load_config(_toml(tmp_path, 'lr = "fast"\n'))
    with pytest.raises(UsageError, match=r"data = 5: expected a path \(string\)"):
        load_config(_toml(tmp_path, "data = 5\n"))
    with pytest.raises(UsageError, match=r"resolution = '64': expected an integer"):
        load_config(_toml(tmp_path, 'resolution = "64"\n'))
    with pytest.raises(UsageError, match="'train' must be a table"):
        load_config(_toml(tmp_path, "train = 5\n"))


def test_every_field_refuses_a_value_of_the_wrong_type():
    names = {int: "an integer", float: "a number", str: "a string", Path: r"a path \(string\)"}
    for field, hint in typing.get_type_hints(TrainConfig).items():
        kind = next(k for k in typing.get_args(hint) or (hint,) if k is not type(None))
        with pytest.raises(UsageError, match=rf"^setting {field} = \[1\]: expected {names[kind]}$"):
            load_config(None, {field: [1]})
    assert len(fields(TrainConfig)) == len(typing.get_type_hints(TrainConfig))


def test_right_types_are_kept_and_converted(tmp_path):
    cfg = load_config(_toml(tmp_path, 'data = "d/train.parquet"\nlr = 1\nweight_decay = 0.5\nbatch_size = 3\n'
                                      'init_adapter = "a.safetensors"\nid_model = "m.onnx"\nresolution = 48\n'
                                      'mixed_precision = "no"\npreset = "tiny"\n'))
    assert cfg.data == Path("d/train.parquet") and cfg.init_adapter == Path("a.safetensors")
    assert cfg.id_model == Path("m.onnx") and cfg.out == Path("runs/train")
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.weight_decay == 0.5
    assert cfg.batch_size == 3 and cfg.resolution == 48 and cfg.mixed_precision == "no"
    assert load_config(None, {"out": Path("x"), "data": "y"}).data == Path("y")


def test_lr_schedule_must_be_a_diffusers_scheduler_the_loop_can_run(tmp_path):
    assert TrainConfig.lr_schedule in {s.value for s in SchedulerType}  # the default is checked by this alone
    assert load_config(None, {"lr_schedule": "cosine"}).lr_schedule == "cosine"
    with pytest.raises(UsageError, match=r"^lr_schedule 'foo': use one of linear, cosine, "):
        load_config(None, {"lr_schedule": "foo"})
    with pytest.raises(UsageError, match="lr_schedule 'piecewise_constant'"):  # needs step rules
        load_config(None, {"lr_schedule": "piecewise_constant"})
    for name in ("constant", "cosine", "linear", "constant_with_warmup"):
        assert load_config(None, {"lr_schedule": name}).lr_schedule == name


def test_resolution_must_be_a_positive_multiple_of_16():
    # 16: the L_map attention maps are resolution/16 wide and must tile the latent exactly
    for bad in (63, 56, 72, 8, 0, -16):
        with pytest.raises(UsageError, match=rf"^resolution {bad}: must be a positive multiple of 16$"):
            load_config(None, {"resolution": bad})
    for good in (16, 48, 64, 80, 512):
        assert load_config(None, {"resolution": good}).resolution == good


def _app():
    from fmu.app import app  # the real app: its handler turns usage errors into exit 2

    return app


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """The TrainConfig the CLI would train with (no training, no preparation)."""
    import fmu.training.finetune
    import fmu.training.trainer

    seen = []

    def fake_run(cfg, progress=None, log=print):
        seen.append(cfg)
        return fmu.training.trainer.TrainSummary(steps=0, world_size=1, seconds=0.0, weights=None, losses=[])

    monkeypatch.setattr(fmu.training.trainer, "run_training", fake_run)
    prepared = tmp_path / "t.parquet"  # exists: the CLI checks the data path before it trains
    prepared.touch()
    monkeypatch.setattr(fmu.training.finetune, "prepared_manifest", lambda data, out, backend: prepared)
    return seen


def test_finetune_precedence_flag_over_toml_over_finetune_defaults(tmp_path, captured, tiny_preset, monkeypatch):
    monkeypatch.chdir(tmp_path)  # finetune holds its default --out (runs/finetune) from the start
    runner = CliRunner()
    # --from must be a real adapter (checked against the face backend before preparing): the preset's
    base = ["finetune", "--from", str(tiny_preset[1]), "--data", str(tmp_path)]
    unrelated = _toml(tmp_path, "lr = 2e-4\n")
    assert runner.invoke(_app(), base + ["--config", str(unrelated)]).exit_code == 0
    assert (captured[-1].max_steps, captured[-1].batch_size, captured[-1].lora_rank) == (500, 2, 16)
    assert captured[-1].lr == 2e-4 and captured[-1].mode == "lora"
    assert runner.invoke(_app(), base).exit_code == 0
    assert (captured[-1].max_steps, captured[-1].batch_size, captured[-1].lora_rank) == (500, 2, 16)
    sets = tmp_path / "sets.toml"
    sets.write_text("[train]\nmax_steps = 40\nbatch_size = 4\nlora_rank = 8\n")
    assert runner.invoke(_app(), base + ["--config", str(sets)]).exit_code == 0
    assert (captured[-1].max_steps, captured[-1].batch_size, captured[-1].lora_rank) == (40, 4, 8)
    flags = ["--config", str(sets), "--max-steps", "7", "--batch-size", "1", "--rank", "2"]
    assert runner.invoke(_app(), base + flags).exit_code == 0
    assert (captured[-1].max_steps, captured[-1].batch_size, captured[-1].lora_rank) == (7, 1, 2)
    # train keeps its own defaults
    assert runner.invoke(_app(), ["train", "--data", str(tmp_path / "t.parquet")]).exit_code == 0
    assert (captured[-1].max_steps, captured[-1].batch_size, captured[-1].lora_rank) == (1000, 8, 128)


def test_cli_usage_errors_are_one_line_exit_2(tmp_path):
    runner = CliRunner()
    bad = _toml(tmp_path, 'batch_size = "eight"\n')
    cases = {
        ("train", "--data", str(tmp_path), "--config", str(bad)): "setting batch_size = 'eight': expected an integer",
        ("train", "--data", str(tmp_path), "--lr-schedule", "foo"): "lr_schedule 'foo': use one of",
        ("train", "--data", str(tmp_path), "--resolution", "63"): "resolution 63: must be a positive multiple of 16",
        ("train", "--max-steps", "1"): "--data is required",
    }
    for args, message in cases.items():
        result = runner.invoke(_app(), list(args))
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "run.json").exists()  # refused before any run record


def test_train_without_data_fails_before_building_a_model(monkeypatch):
    import fmu.training.trainer as trainer

    monkeypatch.setattr(trainer, "build_model", lambda *a: pytest.fail("built a model"))
    with pytest.raises(UsageError, match=r"^--data is required"):
        trainer.run_training(load_config(None, {"max_steps": 1}))
    with pytest.raises(UsageError, match=r"no prepared training manifest at /nonexistent"):
        trainer.run_training(load_config(None, {"data": "/nonexistent"}))


def test_training_md_toml_block_is_the_defaults():
    import re
    import tomllib

    doc = (Path(__file__).resolve().parents[1] / "manifests" / "training.md").read_text()
    block = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)
    shown = tomllib.loads(block)["train"]
    assert len(shown) >= 13 and shown["max_steps"] == 1000
    defaults = load_config(None, {})
    assert {key: getattr(defaults, key) for key in shown} == shown
