"""Hardening: a corpus of bad inputs through `fmu generate` (one row each), manifest-file problems,
decompression bombs under a memory ceiling, outputs confined to --out, no shell built from data.

Every row's outcome is asserted exactly: status and reason kind (the text before ':') per image.
"""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import corpus  # tests/corpus.py (pytest puts tests/ on sys.path)
import numpy as np
import polars as pl
import pytest
from cli_run import generate as run
from corpus import OK
from PIL import Image
from typer.testing import CliRunner

from fmu.app import app

REPO = Path(__file__).resolve().parents[1]
FAST = ["--steps", "1", "--no-shading", "--batch-size", "4"]


def outcomes(out: Path) -> dict[int, list[tuple[str, str | None]]]:
    """manifest row -> [(status, reason kind)] ordered by k."""
    df = pl.read_parquet(out / "results.parquet").sort("row", "k")
    found: dict[int, list] = {}
    for row, status, error in df.select("row", "status", "error").iter_rows():
        found.setdefault(row, []).append((status, error.split(":", 1)[0] if error else None))
    return found


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, photos, tiny_preset, fmu_home):
    root = tmp_path_factory.mktemp("corpus")
    inputs = root / "inputs"
    corpus.write_files(inputs, photos)
    cases = corpus.cases()
    manifest = corpus.write_manifest(inputs, cases)
    out = root / "out"
    before = corpus.snapshot(root, fmu_home)
    result = run([manifest, "--out", out, *FAST])
    after = corpus.snapshot(root, fmu_home, skip=(out,))
    return cases, out, result, before, after


def test_every_row_gets_its_exact_status_and_reason(corpus_run):
    cases, out, result, _, _ = corpus_run
    assert len({c.id for c in cases}) >= 30  # the corpus: > 25 kinds
    assert result.exit_code == 1, result.output
    got = outcomes(out)
    want = {i: c.expect for i, c in enumerate(cases)}
    mismatches = {f"{i} {cases[i].id}": (got.get(i), want[i]) for i in want if got.get(i) != want[i]}
    assert not mismatches, mismatches
    df = pl.read_parquet(out / "results.parquet")
    assert df.height == sum(len(c.expect) for c in cases)
    assert df.select("id", "k", "row").is_unique().all()
    for error in df["error"].drop_nulls():
        assert "\n" not in error and len(error) < 400, error  # one clear line
        kind, _, message = error.partition(": ")
        assert kind and message.strip(), error


def test_ok_rows_have_exactly_their_images(corpus_run):
    cases, out, _, _, _ = corpus_run
    expected = sorted(f"{c.id}_{k}.png" for c in cases for k, e in enumerate(c.expect) if e == OK)
    assert sorted(p.name for p in (out / "images").iterdir()) == expected
    for name in expected:
        with Image.open(out / "images" / name) as img:
            assert img.size == (64, 64) and img.mode == "RGB"
    df = pl.read_parquet(out / "results.parquet").filter(pl.col("status") == "ok")
    assert sorted(Path(p).name for p in df["image"]) == expected


def test_nothing_is_written_outside_out(corpus_run):
    _, out, _, before, after = corpus_run
    assert after == before
    # and everything under --out is a regular file or folder, no links pointing elsewhere
    assert not [p for p in out.rglob("*") if p.is_symlink()]


def test_outputs_are_readable_by_the_group(corpus_run):
    """Files are created with the umask's mode (a temp file's 0600 must not survive the rename)."""
    import os

    _, out, _, _, _ = corpus_run
    umask = os.umask(0)
    os.umask(umask)
    for path in [out / "results.parquet", out / "run.json", *(out / "images").iterdir()]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_long_prompt_is_a_warning_and_the_row_runs(corpus_run):
    cases, out, _, _, _ = corpus_run
    info = json.loads((out / "run.json").read_text())
    row = next(i for i, c in enumerate(cases) if c.id == "long_prompt")
    warnings = [p for p in info["validation_problems"] if p["level"] == "warning"]
    assert [(p["row"], p["kind"]) for p in warnings] == [(row, "prompt_truncated")]
    assert "keeps the first 77" in warnings[0]["message"]
    assert outcomes(out)[row] == [OK]


def test_quoted_newline_prompt_survives_intact(corpus_run):
    cases, out, _, _, _ = corpus_run
    df = pl.read_parquet(out / "results.parquet").filter(pl.col("id") == "multiline_prompt")
    assert df["prompt"].to_list() == [next(c.prompt for c in cases if c.id == "multiline_prompt")]


# -- decoding, checked directly -------------------------------------------------------------------

def test_exif_orientation_gives_the_upright_pixels(tmp_path, astronaut):
    from fmu.core.images import decode_rgb, load_rgb

    upright = Image.fromarray(astronaut)
    data = corpus.exif_rotated(upright)
    assert Image.open(io.BytesIO(data)).size == upright.size[::-1] or upright.size[0] == upright.size[1]
    np.testing.assert_array_equal(decode_rgb(data), astronaut)
    # a non-square photo makes the rotation visible in the shape too
    wide = Image.fromarray(astronaut[:, :400])
    (tmp_path / "wide.png").write_bytes(corpus.exif_rotated(wide))
    assert Image.open(tmp_path / "wide.png").size == (512, 400)
    np.testing.assert_array_equal(load_rgb(tmp_path / "wide.png"), astronaut[:, :400])


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16", "LA"])
def test_every_mode_decodes_to_rgb_uint8(mode, astronaut):
    from fmu.core.images import decode_rgb

    img = Image.fromarray(astronaut)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257)
    else:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG" if mode == "CMYK" else "PNG")
    out = decode_rgb(buf.getvalue())
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    if mode in ("L", "I;16", "LA"):
        np.testing.assert_array_equal(out[..., 0], np.asarray(Image.fromarray(astronaut).convert("L")))


def test_sixteen_bit_keeps_its_exposure(astronaut):
    """A dark 16-bit photo stays dark: scaled by the format's range, not stretched to its max."""
    from fmu.core.images import decode_rgb

    grey8 = np.asarray(Image.fromarray(astronaut).convert("L"))
    dark16 = (grey8.astype(np.uint16) * 257) // 4  # a quarter of the range
    buf = io.BytesIO()
    Image.fromarray(dark16).save(buf, format="PNG")
    out = decode_rgb(buf.getvalue())[..., 0].astype(int)
    assert np.abs(out - grey8 // 4).max() <= 1


def test_animated_gif_uses_the_first_frame(astronaut, photos):
    from fmu.core.images import decode_rgb

    first = Image.fromarray(np.full((64, 64, 3), 200, np.uint8))
    second = Image.fromarray(np.zeros((64, 64, 3), np.uint8))
    buf = io.BytesIO()
    first.save(buf, format="GIF", save_all=True, append_images=[second])
    out = decode_rgb(buf.getvalue())
    assert out.shape == (64, 64, 3) and (out == 200).all()


@pytest.mark.parametrize("side", [corpus.BOMB_SIDE, 10_000])
def test_decompression_bomb_is_refused_without_decoding(tmp_path, side):
    """The header says side² pixels (400 MP would be 1.2 GB as RGB): refused with a clear kind,
    at validation and at decode, while the process's peak RSS stays far below one decoded copy."""
    path = tmp_path / "bomb.png"
    path.write_bytes(corpus.bomb_png(side))
    assert path.stat().st_size < 100_000
    code = (
        "from pathlib import Path\n"
        "from core.images import load_rgb\nfrom core.errors import ImageError\n"
        "from core.manifest.validate import _check_image_file\n"
        f"p = Path({str(path)!r})\n"
        "print('VALIDATE', _check_image_file(p)[0])\n"
        "try:\n    load_rgb(p)\nexcept ImageError as e:\n    print('DECODE', e.kind)\n"
    )
    baseline_mb, _ = corpus.peak_rss_mb_of("import core.manifest.validate, core.images", REPO)
    peak_mb, stdout = corpus.peak_rss_mb_of(code, REPO)
    assert "VALIDATE image_too_large" in stdout and "DECODE image_too_large" in stdout, stdout
    assert peak_mb - baseline_mb < 50, (peak_mb, baseline_mb)   # a decode would add >= 100 MB


# -- --multi-face error, and manifest files ------------------------------------------------------

def test_many_faces_under_the_error_policy(tmp_path, photos, tiny_preset):
    for name in ("t1.jpg", "tom_hanks.png"):
        corpus.copy_photo(photos, name, tmp_path / name)
    pl.DataFrame({"id": ["group", "single"], "reference": ["t1.jpg", "tom_hanks.png"],
                  "prompt": ["a photo", "a photo"]}).write_csv(tmp_path / "m.csv")
    result = run([tmp_path / "m.csv", "--out", tmp_path / "out", *FAST, "--multi-face", "error"])
    assert result.exit_code == 1, result.output
    assert outcomes(tmp_path / "out") == {0: [("failed", "reference multiple_faces")], 1: [OK]}
    error = pl.read_parquet(tmp_path / "out" / "results.parquet")["error"][0]
    assert error == "reference multiple_faces: 6 faces detected and --multi-face is 'error'"
    # an unknown policy is a usage error
    bad = run([tmp_path / "m.csv", "--out", tmp_path / "out2", *FAST, "--multi-face", "first"])
    assert bad.exit_code == 2
    assert "'--multi-face'" in bad.output and "'first' is not one of 'best', 'largest', 'error'" in bad.output


def _one_row_inputs(folder: Path, photos) -> None:
    corpus.copy_photo(photos, "tom_hanks.png", folder / "hanks.png")


@pytest.mark.parametrize("name, content, message", [
    ("no_prompt.csv", "id,reference\na,hanks.png\n", "lacks required column(s): prompt"),
    ("no_columns.csv", "", "cannot read manifest"),
    ("garbage.csv", None, "cannot read manifest"),
    ("manifest.json", '{"reference": "hanks.png"}', "manifest must be .csv, .tsv or .parquet"),
    ("absent.csv", False, "manifest not found"),
    ("broken.parquet", "PAR1 this is not parquet", "cannot read manifest"),
])
def test_manifest_file_problems_are_usage_errors(tmp_path, photos, name, content, message):
    _one_row_inputs(tmp_path, photos)
    path = tmp_path / name
    if content is None:
        path.write_bytes(bytes(range(256)) * 4)
    elif content is not False:
        path.write_text(content)
    result = run([path, "--out", tmp_path / "out", *FAST])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out" / "results.parquet").exists()


def _check_one_ok(out: Path, result, rows: int = 1) -> pl.DataFrame:
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(out / "results.parquet")
    assert df.height == rows and set(df["status"]) == {"ok"}
    return df


@pytest.mark.parametrize("variant", ["bom", "semicolon", "tab"])
def test_csv_dialects(tmp_path, photos, tiny_preset, variant):
    _one_row_inputs(tmp_path, photos)
    sep = {"bom": ",", "semicolon": ";", "tab": "\t"}[variant]
    text = (sep.join(["id", "reference", "prompt"]) + "\n"
            + sep.join(["hanks", "hanks.png", '"a photo, smiling"']) + "\n")
    data = text.encode("utf-8")
    path = tmp_path / ("m.tsv" if variant == "tab" else "m.csv")
    path.write_bytes(b"\xef\xbb\xbf" + data if variant == "bom" else data)
    df = _check_one_ok(tmp_path / "out", run([path, "--out", tmp_path / "out", *FAST]))
    assert df["id"].to_list() == ["hanks"] and df["prompt"].to_list() == ["a photo, smiling"]


def test_parquet_with_extra_columns_and_wrong_types(tmp_path, photos, tiny_preset):
    """Unknown columns (even nested ones) are ignored; typed cells that cannot be what the schema
    says (NaN or fractional seed, text num_images) fail their row only."""
    _one_row_inputs(tmp_path, photos)
    pl.DataFrame({
        "id": ["fine", "nan_seed", "half_seed", "text_count", "int_prompt"],
        "reference": ["hanks.png"] * 5,
        "prompt": ["a photo"] * 4 + ["1234"],
        "seed": [3.0, float("nan"), 2.5, 1.0, 4.0],
        "num_images": ["1", "1", "1", "two", "1"],
        "photographer": ["x"] * 5,
        "tags": [["a", "b"]] * 5,
        "meta": [{"k": 1}] * 5,
    }).write_parquet(tmp_path / "m.parquet")
    result = run([tmp_path / "m.parquet", "--out", tmp_path / "out", *FAST])
    assert result.exit_code == 1, result.output
    assert outcomes(tmp_path / "out") == {0: [OK], 1: [("failed", "wrong_type")], 2: [("failed", "wrong_type")],
                                          3: [("failed", "wrong_type")], 4: [OK]}


def test_header_only_manifest_is_an_empty_successful_run(tmp_path, tiny_preset):
    (tmp_path / "m.csv").write_text("id,reference,prompt\n")
    result = run([tmp_path / "m.csv", "--out", tmp_path / "out", *FAST])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(tmp_path / "out" / "results.parquet").height == 0


def test_absurd_num_images_fails_once(tmp_path, photos, tiny_preset):
    _one_row_inputs(tmp_path, photos)
    pl.DataFrame({"reference": ["hanks.png"], "prompt": ["a photo"], "num_images": [10_000]}).write_csv(
        tmp_path / "m.csv")
    result = run([tmp_path / "m.csv", "--out", tmp_path / "out", *FAST])
    assert result.exit_code == 1
    assert outcomes(tmp_path / "out") == {0: [("failed", "out_of_range")]}


# -- security --------------------------------------------------------------------------------------

def test_saved_conditions_stay_inside_out(tmp_path, photos, tiny_preset, fmu_home):
    _one_row_inputs(tmp_path, photos)
    corpus.copy_photo(photos, "astronaut.png", tmp_path / "astro.png")
    pl.DataFrame({"id": ["a.b-c_1", "Z9"], "reference": ["hanks.png", "astro.png"],
                  "prompt": ["a photo", "a photo"]}).write_csv(tmp_path / "m.csv")
    out = tmp_path / "out"
    before = corpus.snapshot(tmp_path, fmu_home)
    result = run([tmp_path / "m.csv", "--out", out, "--steps", "1", "--save-conditions"])
    assert result.exit_code == 0, result.output
    assert corpus.snapshot(tmp_path, fmu_home, skip=(out,)) == before
    df = pl.read_parquet(out / "results.parquet")
    assert sorted(df["condition"]) == ["conditions/Z9.png", "conditions/a.b-c_1.png"]
    for rel in [*df["condition"], *df["image"]]:
        resolved = (out / rel).resolve()
        assert out.resolve() in resolved.parents and resolved.is_file()


FORBIDDEN_CALLS = {("os", "system"), ("os", "popen"), ("os", "execv"), ("os", "execvp"), ("os", "execl"),
                   ("os", "spawnv"), ("os", "spawnl"), ("pty", "spawn"), ("commands", "getoutput")}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                yield node, (f.value.id, f.attr)
            elif isinstance(f, ast.Name):
                yield node, (None, f.id)


def test_no_shell_or_code_execution_reachable_from_manifest_data():
    """Product code never starts processes through a shell, never eval/exec's strings, never
    unpickles without weights_only: scanned in the AST of every module under core/, training/,
    fmu_cli/ and manifests/. (Weight-file refusal itself: tests/test_weights_security.py.)"""
    found = []
    files = [p for d in ("core", "training", "fmu_cli", "manifests") for p in (REPO / d).rglob("*.py")]
    assert len(files) > 40
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("subprocess", "pty", "commands") for n in names):
                    found.append(f"{path}:{node.lineno} imports a process launcher")
        for node, (owner, name) in _calls(tree):
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if (owner, name) in FORBIDDEN_CALLS or (owner is None and name in ("eval", "exec", "compile")):
                found.append(f"{where} {owner}.{name}")
            if any(k.arg == "shell" for k in node.keywords):
                found.append(f"{where} shell=")
            if (owner, name) in {("pickle", "load"), ("pickle", "loads"), ("dill", "load")}:
                found.append(f"{where} unrestricted unpickling")
            if (owner, name) == ("torch", "load"):
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    found.append(f"{where} torch.load without weights_only=True")
            if name == "load" and owner in ("np", "numpy"):
                kw = {k.arg: k.value for k in node.keywords}
                if isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is True:
                    found.append(f"{where} np.load(allow_pickle=True)")
    assert not found, found


# -- robustness round 2: huge files, unreadable CSV records, odd Parquet cells, clashing columns ----

def test_a_huge_file_is_refused_without_reading_it(tmp_path, photos):
    """A valid PNG padded to 3 GB (sparse): validation, decoding and face analysis refuse it as
    file_too_large by its size, before hashing or reading it; the process's memory stays flat."""
    path = corpus.pad_sparse(corpus.copy_photo(photos, "tom_hanks.png", tmp_path / "huge.png"))
    assert path.stat().st_size == corpus.HUGE_BYTES
    code = (
        "from pathlib import Path\n"
        "from core.images import load_rgb\nfrom core.errors import ImageError\n"
        "from core.faces import get_backend\nfrom core.faces.cache import FaceCache\n"
        "from core.manifest.validate import _check_image_file\n"
        f"p = Path({str(path)!r})\n"
        "print('VALIDATE', _check_image_file(p)[0])\n"
        "for name, fn in [('DECODE', load_rgb), "
        f"('ANALYSE', FaceCache(Path({str(tmp_path / 'cache')!r}), get_backend('dlib')).analyse_file)]:\n"
        "    try:\n        fn(p)\n    except ImageError as e:\n        print(name, e.kind)\n"
    )
    baseline_mb, _ = corpus.peak_rss_mb_of("import core.manifest.validate, core.images, core.faces.cache\n"
                                           "from core.faces import get_backend\nget_backend('dlib')", REPO)
    peak_mb, stdout = corpus.peak_rss_mb_of(code, REPO)
    for stage in ("VALIDATE", "DECODE", "ANALYSE"):
        assert f"{stage} file_too_large" in stdout, stdout
    assert peak_mb - baseline_mb < 50, (peak_mb, baseline_mb)  # reading it would add 3 GB


def test_unreadable_csv_records_fail_their_own_rows(tmp_path, photos, tiny_preset):
    corpus.copy_photo(photos, "tom_hanks.png", tmp_path / "tom_hanks.png")
    path = corpus.write_broken_csv(tmp_path)
    result = run([path, "--out", tmp_path / "out", *FAST])
    assert result.exit_code == 1, result.output
    got = outcomes(tmp_path / "out")
    want = {i: [e[:2]] for i, e in enumerate(corpus.BROKEN_CSV_EXPECT)}
    assert got == want
    errors = dict(zip(*pl.read_parquet(tmp_path / "out" / "results.parquet").select("row", "error")))
    for i, expected in enumerate(corpus.BROKEN_CSV_EXPECT):
        if expected != OK:
            assert f": line {expected[2]}: " in errors[i], errors[i]
    df = pl.read_parquet(tmp_path / "out" / "results.parquet").filter(pl.col("status") == "ok")
    assert sorted(df["id"]) == ["multi", "ok1", "ok2", "ok3"]
    assert df.filter(pl.col("id") == "multi")["prompt"].to_list() == ["two\nlines, quoted"]
    assert errors[2] == "not_utf8: line 4: byte 0xe9 at column 25 is not UTF-8 text (save the manifest as UTF-8)"
    assert errors[1] == "malformed_row: line 3: 4 fields, the header has 3"
    assert errors[3] == "malformed_row: line 5: a quote opens a field that does not close where the row ends"
    listed = CliRunner().invoke(app, ["validate", str(path)], env={"COLUMNS": "300"})
    assert listed.exit_code == 1 and "7 rows: 4 usable, 3 unusable" in listed.output


def test_csv_reader_rows_line_up_with_polars(tmp_path):
    """The record-by-record reader makes the rows polars makes of a good file (blank lines, short
    records, quoted newlines, CRLF), so a row keeps its number and default id whichever reads it."""
    from fmu.core.manifest.csv_rows import read_csv_rows

    text = b'id,reference,prompt\r\na,x.png,p\r\n\r\nb,y.png\r\n"c","z.png","two\r\nlines"\r\nd,w.png,q\r\n\r\n'
    header, records, problems = read_csv_rows(text, ",", "m.csv")
    (tmp_path / "m.csv").write_bytes(text)
    want = pl.read_csv(tmp_path / "m.csv", infer_schema=False)
    assert header == want.columns and problems == [None] * want.height
    assert [[c or None for c in r] for r in records] == [list(r) for r in want.rows()]


def test_parquet_cells_of_other_types_fail_their_rows(tmp_path, photos, tiny_preset):
    """`reference` as bytes (UTF-8 or not), `prompt` as a list, bytes or struct: row errors with the
    cell shown on one line, written to results.parquet (this used to crash writing them)."""
    corpus.copy_photo(photos, "tom_hanks.png", tmp_path / "hanks.png")
    pl.DataFrame({"id": ["utf8_bytes", "latin1_bytes"], "reference": [b"hanks.png", b"h\xe9.png"],
                  "prompt": ["a photo", "a photo"]}).write_parquet(tmp_path / "ref.parquet")
    result = run([tmp_path / "ref.parquet", "--out", tmp_path / "o1", *FAST])
    assert result.exit_code == 1 and outcomes(tmp_path / "o1") == {0: [OK], 1: [("failed", "wrong_type")]}
    assert pl.read_parquet(tmp_path / "o1" / "results.parquet")["error"][1] == \
        r"wrong_type: reference=b'h\xe9.png' is not a valid String"
    for name, prompts in [("list", [["a", "photo"], ["x"] * 100]), ("bytes", [b"\xff\xfe", b"caf\xe9"]),
                          ("struct", [{"text": "a"}, {"text": "b"}])]:
        pl.DataFrame({"reference": ["hanks.png"] * 2, "prompt": prompts}).write_parquet(tmp_path / f"{name}.parquet")
        result = run([tmp_path / f"{name}.parquet", "--out", tmp_path / name, *FAST])
        assert result.exit_code == 1, (name, result.output)
        df = pl.read_parquet(tmp_path / name / "results.parquet")
        assert df["status"].to_list() == ["failed"] * 2 and df["prompt"].to_list() == [None, None]
        assert all(e.startswith("wrong_type: prompt=") and len(e) < 200 for e in df["error"]), df["error"]


@pytest.mark.parametrize("columns", ["id,reference,prompt,Prompt", "id,reference,prompt, prompt",
                                     "id,Reference,REFERENCE,prompt"])
def test_columns_equal_but_for_case_or_spaces_are_a_usage_error(tmp_path, photos, columns):
    _one_row_inputs(tmp_path, photos)
    (tmp_path / "m.csv").write_text(columns + "\nh,hanks.png,a photo,another\n")
    clashing = [c for c in columns.split(",") if c.strip().lower() in ("prompt", "reference")
                and sum(d.strip().lower() == c.strip().lower() for d in columns.split(",")) > 1]
    for command in (["generate", "--out", str(tmp_path / "out")], ["validate"]):
        result = CliRunner().invoke(app, [command[0], str(tmp_path / "m.csv"), *command[1:]],
                                    env={"COLUMNS": "300"})
        assert result.exit_code == 2, result.output
        line = " ".join(result.output.split())
        assert "differ only in case or spaces" in line and all(repr(c) in line for c in clashing), line
    assert not (tmp_path / "out").exists()
