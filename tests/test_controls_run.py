"""Pose / expression / light as manifest values end to end: validation, `fmu expand`, `fmu generate`
(row errors, recorded values, resume), scores against the request in generate and `fmu score`, the
report's control grid (in headless Chromium), and `fmu shade`'s options."""

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cli_run import invoke as cli
from PIL import Image

from fmu.core.images import save_png, to_square
from fmu.core.manifest import read_manifest, validate

FAST = ["--steps", "2", "--batch-size", "4"]


@pytest.fixture
def folder(tmp_path, photos):
    for name in ("astronaut.png", "tom_hanks.png", "chelsea.png"):
        shutil.copy(photos[name], tmp_path / name)
    return tmp_path


def test_manifest_checks_the_control_columns(folder):
    rows = [("ok", "30", "-10", "5", "tom_hanks.png", "left"), ("neutral", "", "", "", "Neutral", "az=30,el=10"),
            ("sh", "", "", "", "", "1,0,0,0,0,0,0,0,0"), ("yaw200", "200", "", "", "", ""),
            ("pitchx", "", "x", "", "", ""), ("roll91", "", "", "-91", "", ""),
            ("sideways", "", "", "", "", "sideways"), ("far_az", "", "", "", "", "az=500,el=0"),
            ("no_expr", "", "", "", "nope.png", ""), ("nan", "nan", "", "", "", "")]
    pl.DataFrame({"id": [r[0] for r in rows], "reference": "astronaut.png", "prompt": "p",
                  "yaw": [r[1] for r in rows], "pitch": [r[2] for r in rows], "roll": [r[3] for r in rows],
                  "expression": [r[4] for r in rows], "light": [r[5] for r in rows]}).write_csv(folder / "m.csv")
    v = validate(read_manifest(folder / "m.csv"), folder)
    kinds = {(p.id, p.column): p.kind for p in v.problems}
    assert kinds == {("yaw200", "yaw"): "out_of_range", ("pitchx", "pitch"): "wrong_type",
                     ("roll91", "roll"): "out_of_range", ("sideways", "light"): "bad_light",
                     ("far_az", "light"): "out_of_range", ("no_expr", "expression"): "missing_file",
                     ("nan", "yaw"): "wrong_type"}
    messages = {p.id: p.reason for p in v.problems}
    assert messages["yaw200"] == "out_of_range: yaw=200.0 outside [-90.0, 90.0]"
    assert messages["sideways"].startswith("bad_light: light 'sideways' is not a preset (front, left, right")
    assert messages["no_expr"] == f"missing_file: expression: file not found: {folder / 'nope.png'}"
    table = v.table.sort("row")
    assert table["id"].to_list() == ["ok", "neutral", "sh"]
    assert table["yaw"].to_list() == [30.0, None, None] and table["roll"].to_list() == [5.0, None, None]
    assert table["expression"].to_list() == [str(folder / "tom_hanks.png"), "neutral", None]
    assert table["light"].to_list() == ["left", "az=30,el=10", "1,0,0,0,0,0,0,0,0"]
    rows = {r.id: r.controls for r in v.rows}
    assert rows["ok"].angles == (30.0, -10.0, 5.0) and rows["sh"].light == "1,0,0,0,0,0,0,0,0"
    assert rows["neutral"].expression_file is None and rows["ok"].expression_file == str(folder / "tom_hanks.png")


def test_expand_writes_an_explicit_grid(folder, monkeypatch):
    (folder / "in").mkdir()
    shutil.move(folder / "astronaut.png", folder / "in" / "astronaut.png")
    pl.DataFrame({"id": ["astro", None], "reference": ["astronaut.png", "astronaut.png"], "prompt": ["a", "b"],
                  "seed": [1, 2]}).write_csv(folder / "in" / "faces.csv")
    monkeypatch.chdir(folder)
    out = folder / "grids" / "grid.csv"
    res = cli("expand", "in/faces.csv", "--yaw", "-45:45:15", "--light", "front,left;az=30,el=10",
              "--expression", "neutral,tom_hanks.png", "--out", out)
    assert res.exit_code == 0, res.output
    grid = read_manifest(out)
    # the message's words, whatever rich wrapped them to (a long temp path moves the line breaks)
    assert grid.height == 2 * 7 * 3 * 2 and "84 rows" in " ".join(res.output.split())
    ids = grid["id"].to_list()
    assert ids[:3] == ["astro_yaw-45_expr-neutral_light-front", "astro_yaw-45_expr-neutral_light-left",
                       "astro_yaw-45_expr-neutral_light-az30-el10"]
    assert "astro_yaw45_expr-tom-hanks_light-left" in ids and ids[42].startswith("row000001_yaw-45_")
    assert sorted({float(y) for y in grid["yaw"]}) == [-45, -30, -15, 0, 15, 30, 45]
    assert set(grid["reference"]) == {"../in/astronaut.png"} and set(grid["expression"]) == {
        "neutral", "../tom_hanks.png"}
    assert set(grid["seed"]) == {"1", "2"}
    # the grid is a valid manifest as it stands
    v = validate(grid, out.parent)
    assert v.ok and v.table.height == 84
    # Parquet by suffix, same rows
    assert cli("expand", "in/faces.csv", "--yaw", "-45:45:15", "--light", "front,left;az=30,el=10",
               "--expression", "neutral,tom_hanks.png", "--out", folder / "grid.parquet").exit_code == 0
    assert pl.read_parquet(folder / "grid.parquet")["id"].to_list() == ids
    for bad in (["--yaw", "-200:0:10"], ["--yaw", "a:b"], ["--light", "sideways"], ["--expression", "nope.png"],
                []):
        res = cli("expand", "in/faces.csv", *bad, "--out", folder / "bad.csv")
        assert res.exit_code == 2 and not (folder / "bad.csv").exists(), res.output
        assert len(res.output.strip().splitlines()) == 1, res.output


def test_generate_controls_row_errors_recorded_values_and_resume(folder, fmu_home):
    """Bad values fail their rows with clear reasons and the run completes; the asked values are
    recorded; editing one cell redoes exactly that row; results written before the columns existed
    keep their images."""
    rows = [("plain", None, None, None), ("posed", 30.0, "left", None), ("mixed", -20.0, None, "tom_hanks.png"),
            ("shut", None, None, "neutral"), ("yaw200", 200.0, None, None), ("sideways", None, "sideways", None),
            ("no_expr", None, None, "nope.png"), ("cat_expr", None, None, "chelsea.png")]
    manifest = folder / "m.csv"

    def write(rows):
        pl.DataFrame({"id": [r[0] for r in rows], "reference": "astronaut.png", "prompt": "a photo",
                      "seed": 5, "yaw": [r[1] for r in rows], "light": [r[2] for r in rows],
                      "expression": [r[3] for r in rows]}).write_csv(manifest)

    write(rows)
    out = folder / "out"
    first = cli("generate", manifest, "--out", out, *FAST, "--save-conditions")
    assert first.exit_code == 1, first.output
    df = pl.read_parquet(out / "results.parquet")
    by_id = {r["id"]: r for r in df.iter_rows(named=True)}
    assert {i for i, r in by_id.items() if r["status"] == "ok"} == {"plain", "posed", "mixed", "shut"}
    assert by_id["yaw200"]["error"] == "out_of_range: yaw=200.0 outside [-90.0, 90.0]"
    assert by_id["sideways"]["error"].startswith("bad_light: light 'sideways' is not a preset")
    assert by_id["no_expr"]["error"] == f"missing_file: expression: file not found: {folder / 'nope.png'}"
    assert by_id["cat_expr"]["error"] == "expression no_face: no face found by the mediapipe face mesh"
    assert (by_id["posed"]["yaw"], by_id["posed"]["light"], by_id["posed"]["expression"]) == (30.0, "left", None)
    assert by_id["mixed"]["expression"] == str(folder / "tom_hanks.png") and by_id["mixed"]["expression_sha256"]
    assert by_id["plain"]["yaw"] is None and by_id["plain"]["expression_stamp"] is None
    assert by_id["shut"]["expression"] == "neutral" and by_id["shut"]["expression_sha256"] is None
    conditions = {i: np.asarray(Image.open(out / "conditions" / f"{i}.png")) for i in ("plain", "posed", "mixed")}
    assert not np.array_equal(conditions["plain"], conditions["posed"])

    def mtimes():
        return {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}

    before = mtimes()
    rows[1] = ("posed", 35.0, "left", None)         # one cell edited
    write(rows)
    second = cli("generate", manifest, "--out", out, *FAST)
    assert "4 ok, 4 failed, 3 of them finished earlier and kept" in second.output, second.output
    after = mtimes()
    assert after["posed_0.png"] != before["posed_0.png"]
    assert all(after[f"{i}_0.png"] == before[f"{i}_0.png"] for i in ("plain", "mixed", "shut"))
    assert pl.read_parquet(out / "results.parquet").filter(pl.col("id") == "posed")["yaw"].to_list() == [35.0]

    # the expression image replaced under the same path: its row is made again
    Image.open(folder / "astronaut.png").save(folder / "tom_hanks.png")
    third = cli("generate", manifest, "--out", out, *FAST)
    assert "3 of them finished earlier and kept" in third.output
    assert mtimes()["mixed_0.png"] != after["mixed_0.png"]

    # results.parquet as an fmu without these columns wrote it: the rows that ask for nothing stay done
    old = pl.read_parquet(out / "results.parquet").drop("yaw", "pitch", "roll", "expression", "light",
                                                        "expression_stamp", "expression_sha256")
    old.write_parquet(out / "results.parquet")
    kept = mtimes()
    fourth = cli("generate", manifest, "--out", out, *FAST)
    assert "1 of them finished earlier and kept" in fourth.output
    assert mtimes()["plain_0.png"] == kept["plain_0.png"]

    # no 3D channel: a row that asks for a pose cannot get it and says so; the others are made
    bare = cli("generate", manifest, "--out", folder / "bare", *FAST, "--no-shading")
    assert bare.exit_code == 1
    df = pl.read_parquet(folder / "bare" / "results.parquet")
    reasons = dict(zip(df["id"], df["error"]))
    assert reasons["plain"] is None
    assert reasons["posed"] == ("no_condition: pose, expression or light asked for, but there is no 3D condition "
                                "(--no-shading)")


def test_generate_scores_the_output_against_the_request(tmp_path, astronaut):
    """Pose/Light errors of an output against what was asked: the photo itself as the output
    (yaw about 0, its own light) scored against yaw 30 and light `left`."""
    from fmu.core.runner.conditions import ConditionProvider
    from fmu.core.shading import fit_sh, light_error, pose_error_deg, reconstruct
    from fmu.core.shading.controls import ControlRequest
    from fmu.core.shading.light_presets import parse_light

    save_png(tmp_path / "a.png", astronaut)
    provider = ConditionProvider(tmp_path / "cache", renderer="cpu")
    output = to_square(astronaut, 512)
    plain = provider.get(tmp_path / "a.png", None, 512, 512)
    asked = provider.get(tmp_path / "a.png", None, 512, 512, request=ControlRequest(yaw=30, light="left"))
    assert provider.computed == 2                  # its own cache entry
    mesh = reconstruct(output)
    fitted_pose, fitted_sh = mesh.pose, fit_sh(output, mesh)
    same = provider.consistency(plain, output)
    scored = provider.consistency(asked, output)
    assert same["pose_error_deg"] < 0.5
    want_pose = [30.0, plain.pose[1], plain.pose[2]]
    assert scored["pose_error_deg"] == pytest.approx(pose_error_deg(want_pose, fitted_pose), abs=1e-4)
    assert scored["pose_error_deg"] > 15
    assert scored["light_error"] == pytest.approx(light_error(parse_light("left"), fitted_sh), abs=1e-5)
    assert scored["light_error"] > 5 * same["light_error"]


def _chromium_loads_every_image(path: Path, tmp_path) -> tuple[int, int]:
    import re
    import subprocess

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
           "--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'p'}",
           "--virtual-time-budget=5000", "--dump-dom", path.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=True).stdout
    m = re.search(r'id="img-check" data-loaded="(\d+)" data-total="(\d+)"', dom)
    assert m, "the page's image check did not run"
    return int(m[1]), int(m[2])


def test_score_against_the_request_and_the_report_grid(tmp_path, astronaut):
    from fmu.core.scoring import ScoreOptions, score_run
    from fmu.core.shading import fit_sh, light_error, pose_error_deg, reconstruct
    from fmu.core.shading.condition import analyse_frame
    from fmu.core.shading.light_presets import parse_light

    run = tmp_path / "run"
    save_png(tmp_path / "ref.png", astronaut)
    output = to_square(astronaut, 512)
    reference = str(tmp_path / "ref.png")
    records = []
    for yaw in (-30.0, 0.0, 30.0):
        for light in ("front", "left"):
            rid = f"a_yaw{yaw:g}_light-{light}"
            save_png(run / "images" / f"{rid}_0.png", output)
            records.append(dict(id=rid, k=0, status="ok", error=None, seed=0, prompt="p", reference=reference,
                                target=None, image=f"images/{rid}_0.png", condition=None, yaw=yaw, light=light))
    records.append(dict(id="plain", k=0, status="ok", error=None, seed=0, prompt="p", reference=reference,
                        target=None, image="images/a_yaw0_light-front_0.png", condition=None, yaw=None, light=None))
    pl.DataFrame(records).write_parquet(run / "results.parquet")
    (run / "run.json").write_text(json.dumps({"face_backend": "dlib", "face_models": None}))
    result = score_run(run, ScoreOptions(metrics=("consistency",)))
    scores = result.scores
    assert scores["yaw"].to_list()[:6] == [-30.0, -30.0, 0.0, 0.0, 30.0, 30.0]
    src_mesh, _ = analyse_frame(astronaut, 512)          # the reference as generation fits it
    out_mesh = reconstruct(output)
    out_sh = fit_sh(output, out_mesh)
    for i, r in enumerate(records[:6]):
        want = [r["yaw"], src_mesh.pose[1], src_mesh.pose[2]]
        assert scores["pose_error_deg"][i] == pytest.approx(pose_error_deg(want, out_mesh.pose), abs=1e-4)
        assert scores["light_error"][i] == pytest.approx(light_error(parse_light(r["light"]), out_sh), abs=1e-5)
    assert scores["pose_error_deg"][6] < 0.5 and scores["light_error"][6] < 0.01   # no request: vs the photo
    assert result.summary["metrics"]["pose_light"]["n_against_request"] == 6

    html = (run / "report.html").read_text()
    assert html.count("<table class='controls'>") == 1        # one grid: one reference asked for controls
    grid = html[html.index("<table class='controls'>"):]
    grid = grid[:grid.index("</table>")]
    assert "yaw \u2193 / light \u2192" in grid
    assert [h for h in ("-30°", "0°", "30°") if f"<th>{h}</th>" in grid] == ["-30°", "0°", "30°"]
    assert "<th>front</th>" in grid and "<th>left</th>" in grid
    assert grid.count("<img ") == 6 and "pose err 17." in grid
    loaded, total = _chromium_loads_every_image(run / "report.html", tmp_path)
    assert loaded == total >= 6


def test_shade_takes_the_same_controls(folder):
    out = folder / "cond.png"
    res = cli("shade", folder / "astronaut.png", "--out", out, "--size", "128", "--renderer", "cpu",
              "--frame", "centre", "--yaw", "30", "--light", "left", "--expression", folder / "tom_hanks.png")
    assert res.exit_code == 0, res.output
    assert "+30.00" in res.output and "asked for: yaw 30.0" in res.output
    from fmu.core.images import load_rgb
    from fmu.core.shading import make_condition
    from fmu.core.shading.controls import ControlRequest, resolve

    same = make_condition(load_rgb(folder / "astronaut.png"), size=128, renderer="cpu", controls=resolve(
        ControlRequest(yaw=30.0, light="left", expression=str(folder / "tom_hanks.png"))))
    np.testing.assert_array_equal(load_rgb(out)[..., 0], same.condition)
    for bad, code in ((["--yaw", "200"], 2), (["--light", "sideways"], 2), (["--expression", folder / "nope.png"], 2),
                      (["--expression", folder / "chelsea.png"], 1)):
        res = cli("shade", folder / "astronaut.png", "--out", folder / "x.png", "--frame", "centre", *bad)
        assert res.exit_code == code, res.output
        assert len(res.output.strip().splitlines()) == 1


def test_paired_images_take_their_controls_from_the_manifest(folder):
    from fmu.core.scoring.inputs import rows_from_images

    images = folder / "imgs"
    images.mkdir()
    for name in ("a", "b", "c"):
        save_png(images / f"{name}.png", np.zeros((32, 32, 3), np.uint8))
    pl.DataFrame({"id": ["a", "b", "c"], "reference": "astronaut.png", "prompt": "p", "yaw": ["30", "", "x"],
                  "light": ["left", "", ""], "expression": ["tom_hanks.png", "Neutral", ""]}
                 ).write_csv(folder / "m.csv")
    rows = {r["id"]: r for r in rows_from_images(images, folder / "m.csv").iter_rows(named=True)}
    assert (rows["a"]["yaw"], rows["a"]["light"], rows["a"]["expression"]) == (30.0, "left",
                                                                              str(folder / "tom_hanks.png"))
    assert rows["b"]["yaw"] is None and rows["b"]["expression"] == "Neutral" and rows["b"]["gen_status"] == "ok"
    assert rows["c"]["gen_status"] == "failed" and rows["c"]["gen_error"] == "wrong_type: yaw='x' is not a number"
