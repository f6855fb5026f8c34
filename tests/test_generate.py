"""`fmu generate` end to end on the tiny preset and the shipped photos."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cli_run import generate as run
from PIL import Image

from fmu.manifests.demo import DEMO_ROWS, write_demo_inputs

FAST = ["--steps", "2", "--batch-size", "2"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, fmu_home):
    folder = tmp_path_factory.mktemp("demo")
    manifest = write_demo_inputs(folder / "inputs")
    out = folder / "run1"
    result = run([manifest, "--out", out, *FAST, "--save-conditions"])
    return manifest, out, result


def test_demo_writes_images_results_and_run_json(demo):
    _manifest, out, result = demo
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(out / "results.parquet")
    expected = [(rid, k) for rid, _, _, n in DEMO_ROWS for k in range(n)]
    assert sorted(zip(df["id"], df["k"])) == sorted(expected)
    assert df["status"].to_list() == ["ok"] * len(expected)
    assert len(list((out / "images").glob("*.png"))) == len(expected) >= 3
    for image in df["image"]:
        assert Image.open(out / image).size == (64, 64)
    # the tiny preset draws noise: no face in the outputs, said per row instead of a number
    assert df["id_similarity"].null_count() == len(expected)
    assert set(df["id_similarity_reason"]) == {"no_face: no face detected in the output"}
    info = json.loads((out / "run.json").read_text())
    assert info["preset"] == "tiny-v1" and info["face_backend"] == "dlib"
    assert info["face_identity"]["recognition"] and all("face_identity" not in r for r in info["timings"]["ranks"])
    assert info["summary"]["ok"] == len(expected) and info["summary"]["analyses"] == 3
    assert {"torch", "diffusers"} <= set(info["versions"])
    assert len(list((out / "conditions").glob("*.png"))) == 3


def test_same_manifest_and_seeds_give_bit_identical_images(demo, tmp_path):
    manifest, out, _ = demo
    again = tmp_path / "run2"
    assert run([manifest, "--out", again, *FAST]).exit_code == 0
    for image in sorted((out / "images").glob("*.png")):
        a = np.asarray(Image.open(image))
        b = np.asarray(Image.open(again / "images" / image.name))
        np.testing.assert_array_equal(a, b)


def test_rerun_skips_finished_images(demo):
    manifest, out, _ = demo
    before = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    result = run([manifest, "--out", out, *FAST])
    assert result.exit_code == 0
    after = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    assert before == after
    assert pl.read_parquet(out / "results.parquet").height == len(before)
    assert f"{len(before)} ok, 0 failed, {len(before)} of them finished earlier and kept" in result.output
    assert json.loads((out / "run.json").read_text())["summary"]["skipped"] == len(before)
    # nothing ran, yet run.json still names the face models that made the kept images
    identity = json.loads((out / "run.json").read_text())["face_identity"]
    assert identity["backend"] == "dlib" and len(identity["recognition"]) == 16
    assert identity["clip_crop"] == "aligned"


def test_interrupted_run_resumes_without_duplicates_or_gaps(tmp_path, photos, fmu_home):
    shutil.copy(photos["astronaut.png"], tmp_path / "a.png")
    n = 6
    pl.DataFrame({"id": [f"r{i}" for i in range(n)], "reference": ["a.png"] * n,
                  "prompt": [f"a photo number {i}" for i in range(n)]}).write_csv(tmp_path / "m.csv")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fmu.app", "generate", str(tmp_path / "m.csv"), "--out", str(out),
           "--steps", "8", "--batch-size", "1", "--no-shading"]
    env = {**os.environ, "FMU_HOME": str(fmu_home)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / ".shards").glob("*.parquet"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(list((out / ".shards").glob("*.parquet")))
    assert 2 <= partial < n, "the run should have been killed half-way"
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    df = pl.read_parquet(out / "results.parquet")
    assert sorted(df["id"]) == [f"r{i}" for i in range(n)]
    assert df.select("id", "k").is_unique().all() and set(df["status"]) == {"ok"}
    assert sorted(p.name for p in (out / "images").glob("*")) == [f"r{i}_0.png" for i in range(n)]
    assert not list(out.glob("images/.*.tmp"))


def test_bad_rows_fail_with_reasons_and_the_rest_completes(tmp_path, photos):
    for name in ("astronaut.png", "chelsea.png", "tom_hanks.png"):
        shutil.copy(photos[name], tmp_path / name)
    (tmp_path / "corrupt.jpg").write_bytes(Path(photos["t1.jpg"]).read_bytes()[:3000])
    rows = [("good1", "astronaut.png", "a photo", ""), ("missing", "nope.png", "a photo", ""),
            ("corrupt", "corrupt.jpg", "a photo", ""), ("cat", "chelsea.png", "a photo", ""),
            ("good1", "tom_hanks.png", "duplicate id", ""), ("empty", "tom_hanks.png", "  ", ""),
            ("good2", "tom_hanks.png", "a photo", ""), ("notarget", "astronaut.png", "a photo", "chelsea.png")]
    pl.DataFrame({"id": [r[0] for r in rows], "reference": [r[1] for r in rows],
                  "prompt": [r[2] for r in rows], "target": [r[3] for r in rows]}).write_csv(tmp_path / "m.csv")
    out = tmp_path / "out"
    result = run([tmp_path / "m.csv", "--out", out, *FAST])
    assert result.exit_code == 1, result.output
    df = pl.read_parquet(out / "results.parquet")
    status = {}
    for rid, st, err in df.select("id", "status", "error").iter_rows():
        status.setdefault(rid, []).append((st, err))
    assert status["good2"] == [("ok", None)]
    assert ("ok", None) in status["good1"]
    reasons = {rid: [e for s, e in v if s == "failed"] for rid, v in status.items()}
    assert reasons["missing"][0].startswith("missing_file:")
    assert reasons["corrupt"][0].startswith("reference corrupt_image:")
    assert reasons["cat"] == ["reference no_face: no face detected"]
    assert reasons["good1"][0].startswith("duplicate_id:")
    assert reasons["empty"][0].startswith("empty_prompt:")
    assert reasons["notarget"][0].startswith("target no_face:")  # found by the face frame
    assert all("\n" not in r for v in reasons.values() for r in v)
    assert sorted(p.name for p in (out / "images").glob("*.png")) == ["good1_0.png", "good2_0.png"]


def test_generate_applies_a_finetune_lora(demo, tmp_path, tiny_preset):
    """`fmu generate --lora` applies what `fmu finetune` writes: other images, same rows."""
    import torch

    from fmu.core.model.facemakeup import FaceMakeUp
    from fmu.core.model.lora import FINETUNE_ADAPTER, add_lora

    base, adapter = tiny_preset
    model = FaceMakeUp.from_pretrained(base, adapter)
    add_lora(model.unet, rank=2, name=FINETUNE_ADAPTER)
    with torch.no_grad():
        for name, p in model.unet.named_parameters():
            if "lora_B.fmu_ft" in name:
                p.normal_(0, 0.2)
    model.save_lora_weights(tmp_path / "lora.safetensors")
    manifest, out, _ = demo
    with_lora = tmp_path / "with_lora"
    result = run([manifest, "--out", with_lora, *FAST, "--lora", tmp_path / "lora.safetensors"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (out / "images").glob("*.png"))
    assert names == sorted(p.name for p in (with_lora / "images").glob("*.png"))
    differs = [not np.array_equal(np.asarray(Image.open(out / "images" / n)),
                                  np.asarray(Image.open(with_lora / "images" / n))) for n in names]
    assert all(differs)


def test_a_row_edited_in_place_is_generated_again(tmp_path, photos, fmu_home):
    for name in ("astronaut.png", "tom_hanks.png"):
        shutil.copy(photos[name], tmp_path / name)
    rows = {"id": ["a", "b", "c"], "reference": ["astronaut.png"] * 3,
            "prompt": ["a photo", "a painting", "a drawing"], "seed": [1, 2, 3]}
    manifest = tmp_path / "m.csv"
    pl.DataFrame(rows).write_csv(manifest)
    out = tmp_path / "out"
    assert run([manifest, "--out", out, *FAST, "--no-shading"]).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    pixels_b = np.asarray(Image.open(out / "images" / "b_0.png"))

    # b: new seed; c: new reference; a: unchanged
    pl.DataFrame({**rows, "seed": [1, 7, 3], "reference": ["astronaut.png", "astronaut.png", "tom_hanks.png"]}
                 ).write_csv(manifest)
    second = run([manifest, "--out", out, *FAST, "--no-shading"])
    assert second.exit_code == 0 and "3 ok, 0 failed, 1 of them finished earlier" in second.output
    after = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    assert after["a_0.png"] == before["a_0.png"]
    assert after["b_0.png"] != before["b_0.png"] and after["c_0.png"] != before["c_0.png"]
    assert not np.array_equal(np.asarray(Image.open(out / "images" / "b_0.png")), pixels_b)
    df = pl.read_parquet(out / "results.parquet").sort("id")
    assert df["seed"].to_list() == [1, 7, 3] and df.height == 3
    assert set(df["consistency_reason"]) == {"no_condition: no 3D condition (--no-shading)"}
    assert df["pose_error_deg"].null_count() == 3
    assert [Path(r).name for r in df["reference"]] == ["astronaut.png", "astronaut.png", "tom_hanks.png"]

    # a global default changes every row's effective settings: all redone
    assert run([manifest, "--out", out, "--steps", "3", "--batch-size", "2", "--no-shading"]).exit_code == 0
    df = pl.read_parquet(out / "results.parquet")
    assert set(df["steps"]) == {3} and df.height == 3


def test_a_reference_replaced_under_the_same_path_is_generated_again(tmp_path, photos, fmu_home):
    """Resume follows the bytes: a reference overwritten in place redoes its rows; one only
    touched (same bytes, new mtime) keeps them; rows of other files are kept either way."""
    from fmu.core.digests import file_digest

    for name in ("astronaut.png", "tom_hanks.png"):
        shutil.copy(photos[name], tmp_path / name)
    shutil.copy(photos["tom_hanks.png"], tmp_path / "target.png")
    manifest = tmp_path / "m.csv"
    pl.DataFrame({"id": ["a", "b", "t"], "reference": ["astronaut.png", "tom_hanks.png", "astronaut.png"],
                  "target": [None, None, "target.png"], "prompt": ["a photo"] * 3, "seed": [1, 2, 3]}
                 ).write_csv(manifest)
    out = tmp_path / "out"
    assert run([manifest, "--out", out, *FAST]).exit_code == 0
    df = pl.read_parquet(out / "results.parquet").sort("id")
    assert df["reference_sha256"].to_list() == [file_digest(tmp_path / n) for n in
                                                ("astronaut.png", "tom_hanks.png", "astronaut.png")]
    assert df["target_sha256"].to_list() == [None, None, file_digest(tmp_path / "target.png")]

    def mtimes():
        return {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}

    before = mtimes()
    os.utime(tmp_path / "astronaut.png", ns=(1, 1))  # touched: same bytes
    again = run([manifest, "--out", out, *FAST])
    assert "3 of them finished earlier and kept" in again.output and mtimes() == before

    Image.open(photos["astronaut.png"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "astronaut.png")
    shutil.copy(photos["astronaut.png"], tmp_path / "target.png")  # the target replaced too
    third = run([manifest, "--out", out, *FAST])
    assert third.exit_code == 0 and "3 ok, 0 failed, 1 of them finished earlier" in third.output
    after = mtimes()
    assert after["b_0.png"] == before["b_0.png"]
    assert after["a_0.png"] != before["a_0.png"] and after["t_0.png"] != before["t_0.png"]
    df = pl.read_parquet(out / "results.parquet").sort("id")
    assert df["reference_sha256"][0] == file_digest(tmp_path / "astronaut.png") != file_digest(photos["astronaut.png"])
    assert df["target_sha256"][2] == file_digest(photos["astronaut.png"])


def test_relative_manifest_path_gives_results_that_score_from_anywhere(tmp_path, photos, fmu_home, monkeypatch):
    from fmu.core.scoring import ScoreOptions, score_run

    (tmp_path / "in").mkdir()
    shutil.copy(photos["astronaut.png"], tmp_path / "in" / "a.png")
    pl.DataFrame({"id": ["a"], "reference": ["a.png"], "prompt": ["a photo"]}).write_csv(tmp_path / "in" / "m.csv")
    monkeypatch.chdir(tmp_path)
    assert run(["in/m.csv", "--out", "out", *FAST, "--no-shading"]).exit_code == 0
    df = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert df["reference"].to_list() == [str(tmp_path / "in" / "a.png")]
    monkeypatch.chdir(tmp_path / "in")  # score from another folder
    scores = score_run(Path("../out"), ScoreOptions(metrics=("facesim",), report=False)).scores
    assert scores["error"].to_list() == ["output: no_face (dlib)"]  # noise output; the reference was found


def test_face_crop_follows_the_adapter_unless_overridden(demo, tmp_path):
    manifest, _, _ = demo
    out = tmp_path / "aligned"
    assert run([manifest, "--out", out, *FAST]).exit_code == 0
    default = json.loads((out / "run.json").read_text())["face_identity"]
    assert default["clip_crop"] == "aligned"  # the tiny preset's adapter: fmu's own (aligned) style
    wide = tmp_path / "wide"
    assert run([manifest, "--out", wide, *FAST, "--face-crop", "wide"]).exit_code == 0
    assert json.loads((wide / "run.json").read_text())["face_identity"]["clip_crop"] == "wide"
    assert [p.name.endswith("-wide-best") for p in (wide / ".cache" / "faces").iterdir()] == [True]
    # the CLIP branch saw other pixels: the images differ from the aligned run's
    a = np.asarray(Image.open(out / "images" / "astronaut_0.png"))
    b = np.asarray(Image.open(wide / "images" / "astronaut_0.png"))
    assert not np.array_equal(a, b)
    assert run([manifest, "--out", tmp_path / "bad", *FAST, "--face-crop", "tight"]).exit_code == 2


@pytest.mark.parametrize("case", ["lora_junk", "lora_missing", "seed_huge", "renderer", "out_is_file",
                                  "guidance_nan", "id_scale_negative", "damaged_results"])
def test_bad_run_options_are_one_line_usage_errors(case, tmp_path, photos, fmu_home):
    shutil.copy(photos["astronaut.png"], tmp_path / "a.png")
    manifest = tmp_path / "m.csv"
    pl.DataFrame({"reference": ["a.png"], "prompt": ["a photo"]}).write_csv(manifest)
    out = tmp_path / "out"
    (tmp_path / "junk.safetensors").write_text("junk")
    (tmp_path / "afile").write_text("x")
    extra = {"lora_junk": ["--lora", tmp_path / "junk.safetensors"],
             "lora_missing": ["--lora", tmp_path / "no.safetensors"],
             "seed_huge": ["--seed", "99999999999999999999"], "renderer": ["--renderer", "foo"],
             "out_is_file": [], "guidance_nan": ["--guidance-scale", "nan"],
             "id_scale_negative": ["--id-scale", "-1"], "damaged_results": []}[case]
    if case == "out_is_file":
        out = tmp_path / "afile"
    if case == "damaged_results":
        out.mkdir()
        (out / "results.parquet").write_text("garbage")
    result = run([manifest, "--out", out, *FAST, *extra])
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "out" / "images").exists()
