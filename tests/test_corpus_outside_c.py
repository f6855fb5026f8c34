"""Corpus of issue 23, third part: nothing but `fmu weights pull` touches the network (a hub id
resolves from the local cache only), and a resumed download of a file without a sha256 is checked
before it becomes the file.

Each case runs a subprocess whose environment allows the network but points HF_ENDPOINT at
tests/hub_standin.py (any other host goes to a dead proxy), so every request is seen."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import polars as pl
import pytest
from cli_run import invoke
from hub_standin import HubStandIn
from test_weights_pull import _env, _script


def test_a_hub_id_at_run_time_is_read_from_the_cache_only(tmp_path, photos, tiny_preset, fmu_home):
    """`--vae-decoder tiny:madebyollin/taesd` with nothing cached: exit 2 naming the pull command, and
    not one request reached the (stand-in) hub."""
    shutil.copy(photos["astronaut.png"], tmp_path / "a.png")
    pl.DataFrame([{"reference": "a.png", "prompt": "a photo"}]).write_csv(tmp_path / "m.csv")
    with HubStandIn({"madebyollin/taesd": {"config.json": b"{}"}}) as hub:
        env = {**_env(hub, tmp_path), "FMU_HOME": str(fmu_home), "COLUMNS": "300"}
        result = subprocess.run([sys.executable, "-m", "fmu.app", "generate", str(tmp_path / "m.csv"), "--out",
                                 str(tmp_path / "out"), "--preset", "tiny", "--steps", "1", "--no-shading",
                                 "--vae-decoder", "tiny:madebyollin/taesd"],
                                env=env, capture_output=True, text=True, timeout=600)
        requests = list(hub.requests)
    assert requests == []
    assert result.returncode == 2, result.stdout + result.stderr
    assert "fmu weights pull" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_garbage_partial_of_a_file_without_sha256_is_not_completed_blindly(tmp_path):
    """A non-LFS file (no sha256 in the listing) with a garbage `.incomplete` beside it: the resumed
    bytes fail the git blob id check, the file is fetched again from its start and lands
    byte-identical; it is never a corrupt tokenizer.json."""
    real = json.dumps({"model": {"vocab": {f"w{i}": i for i in range(200)}}}).encode()
    dest = tmp_path / "w" / "base" / "tokenizer" / "tokenizer.json"
    dest.parent.mkdir(parents=True)
    dest.with_name("tokenizer.json.incomplete").write_bytes(b"<html>garbage from a proxy</html>")
    with HubStandIn({"org/base": {"tokenizer/tokenizer.json": real}}) as hub:
        result = _script(hub, tmp_path, f"""
            from pathlib import Path
            from fmu.core.weights.pull import pull_pieces
            from fmu.core.weights.sets import HubPiece
            piece = HubPiece(name="base", repo_id="org/base", patterns=("tokenizer/*",), folder="base", roles={{}},
                             licence="")
            print([(p.ok, p.detail) for p in pull_pieces((piece,), Path("{tmp_path}/w"), "test").pieces])
        """)
    assert "(True, " in result.stdout, result.stdout + result.stderr
    assert dest.read_bytes() == real
    assert not dest.with_name("tokenizer.json.incomplete").exists()


def test_a_json_file_that_does_not_parse_fails_its_piece(tmp_path):
    """A URL file with no checksum at all: its bytes are taken, but a .json that does not parse is
    refused (removed, one line)."""
    with HubStandIn({}, files={"config.json": b'{"truncated": '}) as hub:
        result = _script(hub, tmp_path, f"""
            from pathlib import Path
            from fmu.core.weights.pull import PullError, download_file
            from fmu.core.weights.sets import UrlFile
            try:
                download_file(UrlFile("config.json", "{hub.url}/files/config.json"), Path("{tmp_path}/config.json"))
            except PullError as exc:
                print("refused:", exc)
        """)
    assert "refused: config.json: not valid JSON" in result.stdout, result.stdout + result.stderr
    assert not list(tmp_path.glob("config.json*"))


@pytest.mark.parametrize("record", ["[1, 2]", '{"roles": [1, 2', '{"format": "fmu-weights/1", "roles": [1]}',
                                    '{"format": "fmu-weights/1", "roles": {"vae": 5}}',
                                    '{"format": "fmu-weights/1", "set": ["x"], "roles": {}}'])
def test_a_malformed_weights_record_is_one_line_everywhere(tmp_path, record):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "weights.json").write_text(record)
    (tmp_path / "m.csv").write_text("reference,prompt\na.png,a photo\n")
    for args in (("weights", "list", "--dir", tmp_path / "w"), ("doctor", "--weights", tmp_path / "w"),
                 ("generate", tmp_path / "m.csv", "--out", tmp_path / "out", "--weights", tmp_path / "w")):
        result = invoke(*args, env={"COLUMNS": "300"})   # any exception but the CLI's exit is raised here
        assert result.exit_code == 2, (args, result.output)
        assert "is not a weights record fmu can read" in result.output


def test_a_malformed_weights_record_is_rewritten_by_a_pull(tmp_path):
    from fmu.core.weights.layout import read_record

    (tmp_path / "weights.json").write_text("[1, 2]")
    assert read_record(tmp_path, strict=False) == {}


@pytest.mark.parametrize("args", [("generate", "{m}", "--out", "{o}", "--threads", "100000"),
                                  ("shade", "{a}", "--out", "{o}.png", "--frame-scale", "inf")])
def test_absurd_numbers_are_usage_errors(tmp_path, photos, args):
    shutil.copy(photos["astronaut.png"], tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("reference,prompt\na.png,a photo\n")
    words = [w.format(m=tmp_path / "m.csv", o=tmp_path / "out", a=tmp_path / "a.png") for w in args]
    result = invoke(*words, env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.png").exists()


def test_weights_pull_into_a_file_or_an_unwritable_place_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = invoke("weights", "pull", "--dir", tmp_path / "afile", env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "is a file; give a folder" in result.output, result.output
    # a folder that cannot be made (its parent is a file): the OSError of a read-only or full disk
    result = invoke("weights", "pull", "--dir", tmp_path / "afile" / "sub", env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "cannot write to" in result.output, result.output
    assert (tmp_path / "afile").read_text() == "x"


def test_a_pickle_in_the_image_encoder_folder_is_one_line_and_never_runs(tmp_path, tiny_preset):
    """An --image-encoder folder whose weights are a code-carrying pytorch_model.bin: a usage error
    naming the folder (torch's weights_only loader refuses it), and the payload never ran."""
    import torch
    from test_weights_security import _Payload

    from fmu.core.errors import UsageError
    from fmu.core.model.load import load_base

    base, _ = tiny_preset
    enc = tmp_path / "enc"
    enc.mkdir()
    shutil.copy(base / "image_encoder" / "config.json", enc / "config.json")
    marker = tmp_path / "PWNED"
    torch.save({"vision_model.embeddings.class_embedding": _Payload(marker)}, enc / "pytorch_model.bin")
    with pytest.raises(UsageError, match=r"no CLIP image encoder at .*enc.*refused unexecuted"):
        load_base(base, torch.device("cpu"), torch.float32, image_encoder=enc)
    assert not marker.exists()
