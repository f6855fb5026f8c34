"""Corpus of issue 23: input from outside (a hub listing, an archive, a manifest cell, a sweep
range, a caption) never writes outside its folder, hangs or blows up; each case fails with one
line naming what was wrong.

Hub cases run `fmu weights pull` in a subprocess against tests/hub_standin.py on 127.0.0.1 (see
test_weights_pull.py for why a subprocess)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from hub_standin import HubStandIn
from test_weights_pull import _script

from fmu.core.safe_paths import UnsafePath, inside

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
