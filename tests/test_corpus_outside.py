"""Corpus of issue 23: input from outside (a hub listing, an archive, a manifest cell, a sweep
range, a caption) never writes outside its folder, hangs or blows up; each case fails with one
line naming what was wrong.

Hub cases run `fmu weights pull` in a subprocess against tests/hub_standin.py on 127.0.0.1 (see
test_weights_pull.py for why a subprocess)."""

from __future__ import annotations

import importlib
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cli_run import invoke
from hub_standin import HubStandIn
from test_weights_pull import _script

from fmu.core.manifest import read_manifest, validate
from fmu.core.manifest.schema import COLUMNS
from fmu.core.safe_paths import UnsafePath, inside
from fmu.core.shading.light_presets import LightError, parse_light

V = importlib.import_module("fmu.core.manifest.validate")   # the module (the package exports the function)

# (listed path, why): each passes the piece's allow patterns below, each would land outside --dir
MALICIOUS_LISTINGS = [
    ("scheduler/../../../../../x.txt", "'..'"),   # from --dir/deep/er/scheduler up past --dir
    ("/tmp/fmu-absolute-x.txt", "absolute"),
    ("scheduler/..\\..\\..\\x.txt", "backslash"),
    ("scheduler/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/x.txt", "'..'"),
    ("scheduler/%2E%2E%2F%2E%2E%2Fx.txt", "'..'"),
]


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.mark.parametrize("listed", [m[0] for m in MALICIOUS_LISTINGS] + ["a/../b", "", ".", "C:/x", "a\0b"])
def test_the_path_rule_refuses_each_escape(tmp_path, listed):
    with pytest.raises(UnsafePath, match="refusing the listed path"):
        inside(tmp_path / "dir", listed)


def test_the_path_rule_refuses_a_symlink_out_and_keeps_ordinary_paths(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePath, match="resolves outside"):
        inside(tmp_path / "dir", "link/x.txt")
    assert inside(tmp_path / "dir", "unet/config.json") == tmp_path / "dir" / "unet" / "config.json"


def test_pull_from_a_malicious_hub_writes_nothing_outside_dir(tmp_path):
    """One repo per malicious entry, each beside an honest file: every piece fails with one line
    naming its path, and not a byte lands outside --dir (nor the honest file: the piece stops before
    opening any)."""
    repos = {f"evil/repo{i}": {listed: b"owned\n", "scheduler/scheduler_config.json": b"{}"}
             for i, (listed, _) in enumerate(MALICIOUS_LISTINGS)}
    work = tmp_path / "work"
    work.mkdir()
    before = _tree(tmp_path)
    with HubStandIn(repos) as hub:
        result = _script(hub, work, f"""
            from pathlib import Path
            from fmu.core.weights.pull import pull_pieces
            from fmu.core.weights.sets import HubPiece
            pieces = tuple(HubPiece(name=f"p{{i}}", repo_id=f"evil/repo{{i}}", patterns=("scheduler/*", "*.txt"),
                                    folder="deep/er", roles={{}}, licence="") for i in range({len(repos)}))
            summary = pull_pieces(pieces, Path("{work}/w"), "test")
            for p in summary.pieces:
                print(p.ok, p.detail)
        """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(MALICIOUS_LISTINGS)
    for line, (listed, why) in zip(lines, MALICIOUS_LISTINGS):
        assert line.startswith("False ") and repr(listed) in line and why in line, line
    new = _tree(tmp_path) - before
    assert all(p.startswith("work/w/") or p in ("work", "work/w") for p in new), new
    assert not [p for p in new if p.endswith(".txt") or "scheduler" in p], new
    assert not list(Path("/tmp").glob("fmu-absolute-x.txt*"))


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/fmu-zip-evil.txt", "a/../../evil.txt", "..\\evil.txt"])
def test_a_zip_member_outside_the_folder_fails_the_piece(tmp_path, member):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("det_10g.onnx", b"detector")
        zf.writestr(member, b"owned")
    with HubStandIn({}, files={"buffalo_l.zip": buf.getvalue()}) as hub:
        result = _script(hub, tmp_path, f"""
            from pathlib import Path
            from fmu.core.weights.pull import pull_pieces
            from fmu.core.weights.sets import UrlFile, UrlPiece
            piece = UrlPiece(name="insightface", folder="insightface", unpack="zip", roles={{}}, licence="",
                             files=(UrlFile("buffalo_l.zip", "{hub.url}/files/buffalo_l.zip"),))
            print([(p.ok, p.detail) for p in pull_pieces((piece,), Path("{tmp_path}/w"), "test").pieces])
        """)
    assert result.returncode == 0, result.stderr
    assert "(False, " in result.stdout and "refusing the listed path" in result.stdout, result.stdout
    assert not list(tmp_path.rglob("evil.txt")) and not Path("/tmp/fmu-zip-evil.txt").exists()
    assert not list((tmp_path / "w").rglob("det_10g.onnx"))   # nothing of the pack unpacked


def test_a_zip_bomb_without_a_pinned_size_is_not_unpacked(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("det_10g.onnx", b"\0" * (30 * 2**20))   # 30 MB from ~30 kB
    with HubStandIn({}, files={"buffalo_l.zip": buf.getvalue()}) as hub:
        result = _script(hub, tmp_path, f"""
            from pathlib import Path
            from fmu.core.weights.pull import pull_pieces
            from fmu.core.weights.sets import UrlFile, UrlPiece
            piece = UrlPiece(name="insightface", folder="insightface", unpack="zip", roles={{}}, licence="",
                             files=(UrlFile("buffalo_l.zip", "{hub.url}/files/buffalo_l.zip"),))
            print([(p.ok, p.detail) for p in pull_pieces((piece,), Path("{tmp_path}/w"), "test").pieces])
        """)
    assert "(False, " in result.stdout and "unpacks to 31,457,280 bytes" in result.stdout, result.stdout
    assert not list(tmp_path.rglob("det_10g.onnx"))


# ---------------------------------------------------------------- manifest cells (items 2 and 5)

HUNG_LIGHT = "1111 " * 14 + "x"   # catastrophic backtracking in the old nine-numbers regex

# a 100 kB cell of each column kind, shaped like the column's own content so a parser would try it
BIG = 100_000


def _big_cell(name: str) -> str:
    if name in ("reference", "target"):
        return "a|" * (BIG // 2)
    if name == "light":
        return "1 " * (BIG // 2)
    if name == "layout":
        return "0,0,1,1|" * (BIG // 8)
    if COLUMNS[name][0] != pl.String:
        return "1" * BIG
    return "a" * BIG


def _one_row(photos, tmp_path, **cells) -> pl.DataFrame:
    shutil.copy(photos["astronaut.png"], tmp_path / "a.png")
    return pl.DataFrame([{"id": "r0", "reference": "a.png", "prompt": "a photo", **cells}])


def test_the_light_value_that_hung_a_regex_is_a_row_error(tmp_path, photos, tiny_preset):
    """`fmu validate` in a subprocess, so a hang fails the test (at the generous timeout) instead of
    stalling the suite; it answers with one bad_light row error."""
    _one_row(photos, tmp_path, light=HUNG_LIGHT).write_csv(tmp_path / "m.csv")
    result = subprocess.run([sys.executable, "-m", "fmu.app", "validate", str(tmp_path / "m.csv")],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "bad_light" in result.stdout and "1 rows: 0 usable, 1 unusable" in result.stdout


def test_nine_numbers_parse_without_a_regex():
    expected = np.array([0.5, -0.25, 1e-3, 2.0, 0.0, 0.0, 1.0, -1.0, 3.0])
    for text in ("0.5 -0.25 1e-3 2 0 0 1 -1 3", "[0.5, -0.25, 1e-3, 2, 0, 0, 1, -1, 3]",
                 "0.5,-0.25,.001,2.,0,0,1,-1,+3"):
        np.testing.assert_array_equal(parse_light(text), expected)
    for text in (HUNG_LIGHT, "nan 1 1 1 1 1 1 1 1", "1 1 1 1 1 1 1 1 inf", "1 2 3"):
        with pytest.raises(LightError):
            parse_light(text)


@pytest.mark.parametrize("column", sorted(COLUMNS))
def test_a_100kB_cell_of_each_column_is_rejected_by_its_length_alone(tmp_path, photos, monkeypatch, column):
    """The row's only problem is cell_too_long, and no parser downstream ever sees the cell
    (the light, people, path and number parsers are spied on). Timing: bench/cli_start.py."""
    seen = []
    for module, name in ((V, "parse_light"), (V.people_layout, "check_row"), (V.people_layout, "check_paths"),
                         (V, "_check_path")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, **k: (seen.append(a), real(*a, **k))[1])
    big = _big_cell(column)
    df = _one_row(photos, tmp_path, **{column: big})
    result = validate(df, tmp_path, count_tokens=lambda s: seen.append((s,)) or len(s.split()))
    assert [(p.row, p.column, p.kind) for p in result.problems] == [(0, column, "cell_too_long")]
    assert not [a for a in seen if any(isinstance(v, str) and len(v) >= BIG // 2 for v in a)]


def test_a_reference_of_many_people_is_one_problem(tmp_path, photos):
    """200 kB of `|` is one cell_too_long; 5000 `|` within the length bound is one too_many_people
    (counted, not split into 5001 people and checked one by one)."""
    for cell, kind in (("|" * 200_000, "cell_too_long"), ("a.png|" * 2000 + "a.png", "too_many_people")):
        result = validate(_one_row(photos, tmp_path, reference=cell, target=cell), tmp_path)
        assert [p.kind for p in result.problems if p.column == "reference"] == [kind]
        assert len(result.problems) <= 2


def test_validate_prints_at_most_five_problems_per_row(tmp_path, photos, tiny_preset):
    bad = {"seed": -1, "num_images": 0, "id_scale": 99.0, "guidance_scale": 99.0, "steps": 0, "width": 7,
           "height": 7}
    _one_row(photos, tmp_path, **bad).write_csv(tmp_path / "m.csv")
    result = invoke("validate", tmp_path / "m.csv", env={"COLUMNS": "300"})
    assert result.exit_code == 1
    problems = validate(read_manifest(tmp_path / "m.csv"), tmp_path).problems
    assert len(problems) == 9   # width and height are both out of range and not multiples of 8
    assert f"and {len(problems) - 5} more problems in this row" in result.output
    assert sum("out_of_range" in line for line in result.output.splitlines()) == 5
