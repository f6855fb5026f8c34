"""`fmu expand` refuses to let a grid replace a pose / expression / light value a row already has,
unless --override (then it warns and the grid's values win)."""

import polars as pl
from cli_run import invoke

from fmu.core.manifest.expand import replaced_values


def _manifest(folder):
    pl.DataFrame({"id": ["a", "b", "c"], "reference": ["x.png"] * 3, "prompt": ["p"] * 3,
                  "yaw": [30.0, None, -10.0], "light": [None, "  ", None]}).write_csv(folder / "m.csv")
    return folder / "m.csv"


def test_a_grid_over_existing_values_is_refused_without_override(tmp_path):
    manifest = _manifest(tmp_path)
    out = tmp_path / "grid.csv"
    refused = invoke("expand", manifest, "--yaw", "0,15", "--out", out)
    assert refused.exit_code == 2 and not out.exists()
    assert "yaw in 2 row(s) (first: a)" in " ".join(refused.output.split())
    # an axis whose column is empty (blank cells count as empty) replaces nothing
    assert invoke("expand", manifest, "--light", "front,left", "--out", out).exit_code == 0
    assert pl.read_csv(out)["yaw"].to_list() == [30.0, 30.0, None, None, -10.0, -10.0]


def test_override_replaces_the_values_and_warns(tmp_path):
    manifest = _manifest(tmp_path)
    out = tmp_path / "grid.csv"
    result = invoke("expand", manifest, "--yaw", "0,15", "--override", "--out", out)
    assert result.exit_code == 0, result.output
    assert pl.read_csv(out)["yaw"].to_list() == [0.0, 15.0] * 3
    assert "replacing values the manifest already had" in " ".join(result.output.split())


def test_replaced_values_names_the_rows():
    df = pl.DataFrame({"id": ["a", "b"], "yaw": [None, 5.0], "expression": ["neutral", None]})
    assert replaced_values(df, ["yaw", "expression", "light"]) == {"yaw": ["b"], "expression": ["a"]}
