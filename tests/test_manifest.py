import polars as pl
import pytest
from typer.testing import CliRunner

from fmu.app import app
from fmu.core.errors import UsageError
from fmu.core.manifest import WARNING, read_manifest, validate


@pytest.fixture
def folder(tmp_path, photos):
    import shutil

    shutil.copy(photos["astronaut.png"], tmp_path / "astro.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    return tmp_path


ROWS = {
    "id": ["a", "b", "a", "../evil", "c", "d", "e"],
    "reference": ["astro.png", "missing.png", "astro.png", "astro.png", "broken.jpg", "empty.png",
                  "https://example.com/x.jpg"],
    "prompt": ["a photo", "a photo", "dup", "x", "   ", "y", "z"],
    "seed": ["1", "2", "3", "4", "notanumber", "-5", "7"],
    "num_images": ["1", "1", "1", "1", "1", "0", "2"],
}


def kinds(result):
    out = {}
    for p in result.problems:
        out.setdefault(p.row, set()).add(p.kind)
    return out


def test_every_problem_is_listed_per_row(folder):
    pl.DataFrame(ROWS).write_csv(folder / "m.csv")
    result = validate(read_manifest(folder / "m.csv"), folder)
    assert [r.id for r in result.rows] == ["a"]
    found = kinds(result)
    assert found[1] == {"missing_file"}
    assert found[2] == {"duplicate_id"}
    assert found[3] == {"unsafe_id"}
    assert found[4] == {"empty_prompt", "wrong_type", "corrupt_image"}
    assert found[5] == {"out_of_range", "empty_file"}
    assert found[6] == {"url_not_supported"}
    assert 0 not in found
    assert result.rows[0].reference == folder / "astro.png" and result.rows[0].seed == 1


def test_csv_and_parquet_read_the_same(folder):
    df = pl.DataFrame(ROWS)
    df.write_csv(folder / "m.csv")
    typed = df.with_columns(pl.col("seed").cast(pl.Int64, strict=False), pl.col("num_images").cast(pl.Int64))
    typed.write_parquet(folder / "m.parquet")
    a = validate(read_manifest(folder / "m.csv"), folder)
    b = validate(read_manifest(folder / "m.parquet"), folder)
    strip = lambda r: [(p.row, p.kind) for p in r.problems if "seed" not in p.message]  # noqa: E731
    assert strip(a) == strip(b)
    assert [r.id for r in a.rows] == [r.id for r in b.rows]


def test_long_prompt_is_a_warning_not_an_error(folder):
    pl.DataFrame({"reference": ["astro.png"], "prompt": ["word " * 100]}).write_csv(folder / "m.csv")
    result = validate(read_manifest(folder / "m.csv"), folder, count_tokens=lambda s: len(s.split()) + 2,
                      token_limit=77)
    assert len(result.rows) == 1 and result.rows[0].id == "row000000"
    (p,) = result.problems
    assert p.level == WARNING and p.kind == "prompt_truncated" and "102 tokens" in p.message


def test_missing_required_column_is_a_usage_error(folder):
    pl.DataFrame({"reference": ["astro.png"]}).write_csv(folder / "m.csv")
    with pytest.raises(UsageError, match="prompt"):
        read_manifest(folder / "m.csv")


def test_csv_with_bom_semicolons_and_quoted_newlines(folder):
    (folder / "m.csv").write_bytes('\ufeffreference;prompt\nastro.png;"two\nlines"\n'.encode("utf-8"))
    result = validate(read_manifest(folder / "m.csv"), folder)
    assert result.ok and result.rows[0].prompt == "two\nlines"


def test_validate_command_exit_codes_and_table(folder, tiny_preset):
    runner = CliRunner()
    pl.DataFrame(ROWS).write_csv(folder / "bad.csv")
    res = runner.invoke(app, ["validate", str(folder / "bad.csv")])
    assert res.exit_code == 1, res.output
    assert "duplicate_id" in res.output and "7 rows: 1 usable, 6 unusable" in res.output
    pl.DataFrame({"reference": ["astro.png"], "prompt": ["a photo"]}).write_csv(folder / "good.csv")
    res = runner.invoke(app, ["validate", str(folder / "good.csv")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["validate", str(folder / "nope.csv")])
    assert res.exit_code == 2


def test_ids_with_control_characters_or_markup_are_printed_inert(folder, tiny_preset):
    """An id is user data: an ESC in it must not reach the terminal, nor [markup] be obeyed."""
    pl.DataFrame({"id": ["\x1b[31mRED", "[bold]x[/bold]"], "reference": ["astro.png"] * 2,
                  "prompt": ["a photo"] * 2}).write_parquet(folder / "ctl.parquet")
    res = CliRunner().invoke(app, ["validate", str(folder / "ctl.parquet")], env={"COLUMNS": "250"})
    assert res.exit_code == 1
    assert "\x1b" not in res.output and "\\x1b[31mRED" in res.output
    assert "[bold]x[/bold]" in res.output  # shown literally, not rendered


def test_integral_numbers_read_alike_from_csv_and_parquet(folder):
    (folder / "m.csv").write_text("reference,prompt,seed,steps\nastro.png,a,3.0,20\nastro.png,b,3.5,2e1\n")
    pl.DataFrame({"reference": ["astro.png"] * 2, "prompt": ["a", "b"], "seed": [3.0, 3.5],
                  "steps": [20.0, 20.0]}).write_parquet(folder / "m.parquet")
    a = validate(read_manifest(folder / "m.csv"), folder)
    b = validate(read_manifest(folder / "m.parquet"), folder)
    for result in (a, b):
        assert result.table["seed"].to_list() == [3] and result.table["steps"].to_list() == [20]
        assert kinds(result) == {1: {"wrong_type"}}  # 3.5 is no seed
