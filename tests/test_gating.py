"""Quality gating (best-of-N) on the tiny preset: thresholds, retries with the next seed, the best
attempt kept, the record of every attempt, rejected images, retries batched per unit."""

import json

import numpy as np
import polars as pl
import pytest
from cli_run import generate as run
from PIL import Image

from fmu.core.model.facemakeup import FaceMakeUp
from fmu.core.runner.gating import SEED_STEP, Attempt, Gate, attempt_seed, summary
from fmu.core.scoring import ScoreOptions, score_run
from fmu.manifests.demo import DEMO_ROWS, write_demo_inputs

FAST = ["--steps", "2", "--batch-size", "4"]
N_IMAGES = sum(r[3] for r in DEMO_ROWS)


@pytest.fixture(scope="module")
def plain(tmp_path_factory, fmu_home):
    """The demo manifest and an ungated run of it."""
    folder = tmp_path_factory.mktemp("gating")
    manifest = write_demo_inputs(folder / "inputs")
    out = folder / "plain"
    assert run([manifest, "--out", out, *FAST]).exit_code == 0
    return manifest, out


def _pixels(path):
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def gated(plain, tmp_path_factory):
    """A run where every image misses its threshold, and the seeds of every batch denoised."""
    manifest, _ = plain
    batches = []
    original = FaceMakeUp.generate

    def counting(self, requests, settings):
        batches.append([r.seed for r in requests])
        return original(self, requests, settings)

    out = tmp_path_factory.mktemp("gated") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FaceMakeUp, "generate", counting)
        result = run([manifest, "--out", out, *FAST, "--min-id-sim", "0.99", "--max-tries", "2", "--keep-rejected"])
    assert result.exit_code == 0, result.output
    return out, batches


def test_a_missed_threshold_makes_every_attempt_and_keeps_the_best(plain, gated):
    plain_out = plain[1]
    out, batches = gated
    df = pl.read_parquet(out / "results.parquet").sort("id", "k")
    assert df.height == N_IMAGES and df["status"].to_list() == ["ok"] * N_IMAGES
    # noise has no face: similarity counts as 0 < 0.99 on both attempts
    assert df["attempts"].to_list() == [2] * N_IMAGES
    assert df["accepted"].to_list() == [False] * N_IMAGES
    assert df["attempt_id_similarity"].to_list() == [[0.0, 0.0]] * N_IMAGES
    assert set(df["rejection_reason"]) == {"id_similarity 0.000 < 0.99"}
    for seed, seeds, kept, rejected in df.select("seed", "attempt_seeds", "kept_seed", "rejected_images").iter_rows():
        assert seeds == [seed, (seed + SEED_STEP) % 2**32]
        assert kept == seed  # a tie: the earliest attempt is the best
        assert len(rejected) == 1 and rejected[0].endswith(f"_s{seeds[1]}.png")
    # the kept image is the planned one (the same as the ungated run's); the rejected one differs
    for image, rejected in df.select("image", "rejected_images").iter_rows():
        np.testing.assert_array_equal(_pixels(out / image), _pixels(plain_out / image))
        assert not np.array_equal(_pixels(out / rejected[0]), _pixels(out / image))
    # the misses of a unit are made again together: one batch of all 4 retries, not 4 batches
    assert len(batches) == 2 and [len(b) for b in batches] == [N_IMAGES, N_IMAGES]
    assert sorted(batches[1]) == sorted(attempt_seed(s, 1) for s in batches[0])


def test_a_met_threshold_makes_one_attempt_and_the_same_image(plain, tmp_path):
    manifest, plain_out = plain
    out = tmp_path / "gated0"
    assert run([manifest, "--out", out, *FAST, "--min-id-sim", "0", "--max-tries", "2"]).exit_code == 0
    df = pl.read_parquet(out / "results.parquet")
    assert df["attempts"].to_list() == [1] * N_IMAGES and df["accepted"].to_list() == [True] * N_IMAGES
    assert df["rejection_reason"].null_count() == N_IMAGES and not (out / "rejected").exists()
    for image in df["image"]:
        np.testing.assert_array_equal(_pixels(out / image), _pixels(plain_out / image))


def test_ungated_runs_record_no_attempts(plain):
    df = pl.read_parquet(plain[1] / "results.parquet")
    assert df["attempts"].null_count() == df["accepted"].null_count() == N_IMAGES


def test_tries_without_a_threshold_is_a_usage_error(plain, tmp_path):
    result = run([plain[0], "--out", tmp_path / "x", "--max-tries", "3"])
    assert result.exit_code == 2 and not (tmp_path / "x").exists()


def test_the_best_attempt_meets_most_thresholds_then_has_the_highest_identity():
    gate = Gate(min_id_sim=0.5, max_pose_err=10.0, max_tries=4)
    attempts = [
        Attempt(1, None, {"id_similarity": 0.9, "pose_error_deg": 30.0}, []),   # misses pose
        Attempt(2, None, {"id_similarity": 0.6, "pose_error_deg": 5.0}, []),    # meets both
        Attempt(3, None, {"id_similarity": 0.7, "pose_error_deg": 9.0}, []),    # meets both, higher id
        Attempt(4, None, {"id_similarity": None, "pose_error_deg": None}, []),  # no face, pose unmeasured
    ]
    for a in attempts:
        a.reasons.extend(gate.misses(a.scores, has_condition=True))
    assert attempts[0].reasons == ["pose_error_deg 30.000 > 10"]
    assert attempts[3].reasons == ["id_similarity 0.000 < 0.5", "pose_error_deg unmeasured"]
    best, fields = summary(gate, attempts, has_condition=True)
    assert best == 2 and fields["kept_seed"] == 3 and fields["accepted"] is True
    assert fields["attempt_id_similarity"] == [0.9, 0.6, 0.7, 0.0] and fields["attempts"] == 4
    # without a 3D condition the pose threshold does not apply: the highest identity wins
    assert summary(gate, attempts, has_condition=False)[0] == 0


def test_the_report_gives_the_rejection_reasons(gated):
    out, _ = gated
    score_run(out, ScoreOptions(metrics=("facesim",)))
    gating = json.loads((out / "summary.json").read_text())["gating"]
    assert gating == {"gated": N_IMAGES, "accepted": 0, "rejected": N_IMAGES, "attempts": 2 * N_IMAGES,
                      "reasons": {"id_similarity < 0.99": N_IMAGES}}
    page = (out / "report.html").read_text()
    assert f"<h2>Quality gate</h2><p>0 of {N_IMAGES} images accepted" in page
    assert f"<tr><td>id_similarity &lt; 0.99</td><td>{N_IMAGES}</td></tr>" in page
    assert page.count("rejected: id_similarity 0.000 &lt; 0.99 (2 attempts)") == N_IMAGES
