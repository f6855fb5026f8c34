"""fmu train / finetune on the tiny preset (CPU, 64 px, batch 2): loss, logs, resume, 2 processes,
final adapter and LoRA file through the generation path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _face_mask(image: np.ndarray) -> np.ndarray:
    from fmu.core.faces import get_backend

    face = max(get_backend("dlib").detect(image), key=lambda f: f.area)
    mask = np.zeros(image.shape[:2], np.uint8)
    x1, y1, x2, y2 = [int(round(v)) for v in face.bbox]
    mask[max(y1, 0):y2, max(x1, 0):x2] = 255
    return mask


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, photos, tiny_preset):
    """Shipped photos + flips/crops (7 faces) with face masks for the phrase "face", plus a
    corrupt image and a face-less one that prepare must exclude."""
    from fmu.training.prepare import PrepareConfig, run_prepare

    root = tmp_path_factory.mktemp("train_src")
    rows = []
    for name in ("astronaut.png", "tom_hanks.png", "t1.jpg"):
        image = Image.open(photos[name]).convert("RGB")
        variants = {"": image, "_flip": image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)}
        if name == "astronaut.png":
            variants["_crop"] = image.crop((100, 0, 400, 300))
        for suffix, variant in variants.items():
            stem = Path(name).stem + suffix
            variant.save(root / f"{stem}.png")
            Image.fromarray(_face_mask(np.asarray(variant))).save(root / f"{stem}_mask.png")
            rows.append({"image": f"{stem}.png", "caption": "a photo of a person, face close up",
                         "masks": json.dumps([{"mask": f"{stem}_mask.png", "phrase": "face"}])})
    shutil.copy(photos["chelsea.png"], root / "cat.png")
    (root / "corrupt.png").write_bytes((root / "astronaut.png").read_bytes()[:3000])
    for bad in ("cat.png", "corrupt.png"):
        rows.append({"image": bad, "caption": "a photo of a person", "masks": ""})
    pl.DataFrame(rows).write_csv(root / "train.csv")
    summary = run_prepare(PrepareConfig(source=root / "train.csv", out=root / "data", resolution=64,
                                        dedupe="exact"))  # the mirrored copies are wanted
    return summary


def _cfg(data, out, **kw):
    from fmu.training.config import load_config

    base = dict(data=data, out=out, max_steps=30, batch_size=2, lr=1e-3, seed=3, checkpoint_every=10,
                keep_checkpoints=2, validate_every=15, validation_steps=3)
    base.update(kw)
    return load_config(None, base)


@pytest.fixture(scope="module")
def run30(prepared, tmp_path_factory):
    from fmu.training.trainer import run_training

    out = tmp_path_factory.mktemp("run30")
    return out, run_training(_cfg(prepared.manifest, out))


def test_bad_rows_excluded(prepared):
    report = pl.read_parquet(prepared.report)
    status = dict(zip(report["id"], report["status"]))
    reason = dict(zip(report["id"], report["reason"]))
    assert prepared.ok == 7 and prepared.failed == 2
    assert status["cat"] == "failed" and reason["cat"].startswith("no_face")
    assert status["corrupt"] == "failed" and reason["corrupt"].startswith("corrupt_image")
    assert sorted(pl.read_parquet(prepared.manifest)["id"]) == sorted(k for k, v in status.items() if v == "ok")


def test_loss_goes_down_and_every_term_is_logged(run30):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, summary = run30
    assert summary.steps == 30 and summary.world_size == 1
    losses = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses] == list(range(1, 31))
    first, last = np.mean([r["loss"] for r in losses[:5]]), np.mean([r["loss"] for r in losses[-5:]])
    assert last < first, (first, last)
    for r in losses:  # loss = mse + λ_map·map + id   (λ_id inside the id term)
        assert r["loss"] == pytest.approx(r["mse"] + 1e-3 * r["map"] + r["id"], rel=1e-5, abs=1e-6)
    assert any(r["map"] > 0 for r in losses) and any(r["id"] > 0 for r in losses)
    results = pl.read_parquet(out / "losses.parquet")  # the same log as a table, every term a column
    assert results["step"].to_list() == list(range(1, 31))
    np.testing.assert_allclose(results["loss"].to_numpy(), [r["loss"] for r in losses], rtol=0, atol=0)
    info = json.loads((out / "run.json").read_text())
    assert info["command"] == "train" and info["summary"]["steps"] == 30 and info["summary"]["status"] == "finished"
    events = EventAccumulator(str(out / "logs" / "train"))
    events.Reload()
    for term in ("loss", "mse", "map", "id"):
        scalars = events.Scalars(f"loss/{term}")
        assert [s.step for s in scalars] == list(range(1, 31))
        assert np.allclose([s.value for s in scalars], [r[term] for r in losses], rtol=1e-6)
    # checkpoints every 10 steps, the last 2 kept; validation images at step 15 and 30
    from fmu.training.checkpoint import list_checkpoints

    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-00000020", "checkpoint-00000030"]
    assert sorted(p.name for p in (out / "validation").iterdir()) == ["step-00000015", "step-00000030"]
    image = np.asarray(Image.open(out / "validation" / "step-00000030" / "00.png"))
    assert image.shape == (64, 64, 3)


def test_final_adapter_loads_and_generates(run30, tiny_preset, prepared):
    from fmu.core.model.adapter import read_adapter
    from fmu.core.model.facemakeup import FaceMakeUp
    from fmu.core.model.pipeline import Request, Settings
    from fmu.training.data import TrainingSet

    out, summary = run30
    base, preset_adapter = tiny_preset
    trained, _ = read_adapter(summary.weights)
    initial, _ = read_adapter(preset_adapter)
    assert trained.keys() == initial.keys()
    for group in ("image_proj.", "ip_attn.", "lora.", "shading."):  # every trainable part moved
        assert any(not torch.equal(trained[k], initial[k]) for k in trained if k.startswith(group)), group
    model = FaceMakeUp.from_pretrained(base, summary.weights)
    sample = TrainingSet(prepared.manifest, model.pipe.tokenizer, 64)[0]
    req = Request(prompt="a photo", id_embedding=sample.id_embedding.numpy(), face_crop=sample.face_crop, seed=1,
                  condition=(sample.condition[0].numpy() * 255).astype(np.uint8))
    images = model.generate([req], Settings(steps=2, width=64, height=64))
    assert images[0].shape == (64, 64, 3)
    # the same weights as the last checkpoint's copy
    ck, _ = read_adapter(out / "checkpoints" / "checkpoint-00000030" / "adapter.safetensors")
    assert all(torch.equal(ck[k], trained[k]) for k in trained)


def test_resume_latest_continues_exactly(run30, prepared, tmp_path):
    from fmu.training.trainer import run_training

    ref_out, _ = run30
    reference = [json.loads(line) for line in (ref_out / "losses.jsonl").read_text().splitlines()]
    out = tmp_path / "interrupted"
    # stop at 12: two steps past the checkpoint at 10, which the resume must redo identically. A run
    # saves at its end too: that checkpoint goes, as if the run had been killed before writing it.
    first = run_training(_cfg(prepared.manifest, out, max_steps=12, validate_every=0))
    assert first.checkpoint == out / "checkpoints" / "checkpoint-00000012"
    shutil.rmtree(first.checkpoint)
    resumed = run_training(_cfg(prepared.manifest, out, max_steps=16, resume="latest", validate_every=0))
    assert [h["step"] for h in resumed.losses] == [11, 12, 13, 14, 15, 16]
    for got, want in zip(resumed.losses, reference[10:16]):
        for term in ("loss", "mse", "map", "id"):
            assert abs(got[term] - want[term]) <= 1e-6, (got, want)


def test_two_processes_over_gloo(prepared, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fmu", "train", "--data", str(prepared.manifest), "--out", str(out),
           "--max-steps", "3", "--batch-size", "2", "--checkpoint-every", "2", "--lambda-id", "0"]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 2 and info["command"] == "train" and info["summary"]["status"] == "finished"
    seen = {r: [json.loads(line) for line in (out / "samples" / f"rank{r}.jsonl").read_text().splitlines()]
            for r in (0, 1)}
    assert [s["position"] for s in seen[0]] == [s["position"] for s in seen[1]] == [0, 1, 2]
    # epoch 0 (positions 0, 1): 7 samples padded to 8, dealt out disjointly except the pad
    epoch0 = {r: [i for s in seen[r][:2] for i in s["ids"]] for r in (0, 1)}
    assert set(epoch0[0]) | set(epoch0[1]) == set(pl.read_parquet(prepared.manifest)["id"])
    assert seen[0][0]["ids"] != seen[1][0]["ids"]
    assert len(set(epoch0[0]) & set(epoch0[1])) <= 1
    ck = out / "checkpoints" / "checkpoint-00000002"
    assert (ck / "COMPLETE").exists() and (ck / "adapter.safetensors").exists()
    assert all((ck / f"rank_{r}.{ext}").exists() for r in (0, 1) for ext in ("json", "safetensors"))
    assert (out / "adapter.safetensors").exists()


def test_finetune_writes_a_lora_that_apply_lora_uses(run30, tiny_preset, photos, tmp_path):
    from fmu.core.model.facemakeup import FaceMakeUp
    from fmu.core.model.lora import lora_state, read_lora_file
    from fmu.core.model.pipeline import Request, Settings
    from fmu.training.config import load_config
    from fmu.training.finetune import prepared_manifest
    from fmu.training.trainer import run_training

    _, summary = run30
    base, _ = tiny_preset
    faces = tmp_path / "faces"
    faces.mkdir()
    shutil.copy(photos["tom_hanks.png"], faces / "hanks.png")
    Image.open(photos["tom_hanks.png"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(faces / "hanks_flip.png")
    out = tmp_path / "ft"
    manifest = prepared_manifest(faces, out, "dlib", resolution=64)
    assert manifest == out / "data" / "train.parquet"
    cfg = load_config(None, dict(data=manifest, out=out, mode="lora", init_adapter=summary.weights, lora_rank=2,
                                 max_steps=3, batch_size=2, lr=1e-2, checkpoint_every=0, seed=1))
    result = run_training(cfg)
    losses = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert all(r["map"] == 0.0 for r in losses)          # a plain folder has no masks
    assert json.loads((out / "run.json").read_text())["command"] == "finetune"
    assert json.loads((out / "data" / "run.json").read_text())["command"] == "prepare"
    assert pl.read_parquet(out / "losses.parquet")["step"].to_list() == [r["step"] for r in losses]
    tensors, meta = read_lora_file(result.weights)
    assert meta["rank"] == "2" and tensors and all("lora_" in k for k in tensors)
    assert any(v.abs().sum() > 0 for k, v in tensors.items() if "lora_B" in k)  # B starts at 0: it trained

    model = FaceMakeUp.from_pretrained(base, summary.weights)
    before = {k: v.clone() for k, v in lora_state(model.unet).items()}
    crop = np.zeros((224, 224, 3), np.uint8)
    req = Request(prompt="a photo", id_embedding=np.ones(128, np.float32) / np.sqrt(128), face_crop=crop, seed=2)
    settings = Settings(steps=2, width=64, height=64)
    plain = model.generate([req], settings)[0]
    model.load_lora_weights(result.weights, scale=1.0)
    from peft.utils import get_peft_model_state_dict

    applied = get_peft_model_state_dict(model.unet, adapter_name="fmu_ft")
    assert applied.keys() == tensors.keys() and all(torch.equal(applied[k], tensors[k]) for k in tensors)
    assert all(torch.equal(v, before[k]) for k, v in lora_state(model.unet).items())  # identity LoRA intact
    with_lora = model.generate([req], settings)[0]
    assert not np.array_equal(plain, with_lora)


def test_training_samples_follow_the_adapters_face_crop(prepared, tiny_preset):
    """An adapter trained with the authors' wide crop (their model.bin) is trained on wide crops,
    cut from the image and the prepared landmarks; fmu's own default stays the aligned crop."""
    from transformers import CLIPTokenizer

    from fmu.core.faces.cache import read_entry as load_face
    from fmu.core.faces.crops import wide_crop
    from fmu.core.images import load_rgb
    from fmu.training.data import TrainingSet

    tok = CLIPTokenizer.from_pretrained(tiny_preset[0] / "tokenizer")
    aligned = TrainingSet(prepared.manifest, tok, 64)
    wide = TrainingSet(prepared.manifest, tok, 64, face_crop="wide")
    row = aligned.rows[0]
    face = load_face(aligned.resolve(row["face_file"]))
    np.testing.assert_array_equal(aligned[0].face_crop, face.crop)
    np.testing.assert_array_equal(wide[0].face_crop, wide_crop(load_rgb(aligned.resolve(row["image"])), face.landmarks))
    assert not np.array_equal(aligned[0].face_crop, wide[0].face_crop)


def test_train_face_crop_wide_trains_on_wide_crops_and_records_it(prepared, tiny_preset, tmp_path, monkeypatch):
    """`fmu train --face-crop wide` (the authors' style) on top of the preset's aligned adapter:
    the samples are wide crops, the adapter written says so, and generation then cuts wide crops."""
    import fmu.training.trainer as trainer
    from fmu.core.errors import UsageError
    from fmu.core.model.facemakeup import FaceMakeUp

    seen = []

    class Spy(trainer.TrainingSet):
        def __getitem__(self, i):
            sample = super().__getitem__(i)
            seen.append((self.face_crop, sample.face_crop))
            return sample

    monkeypatch.setattr(trainer, "TrainingSet", Spy)
    wide = trainer.TrainingSet(prepared.manifest, _tokenizer(tiny_preset), 64, face_crop="wide")
    out = tmp_path / "wide"
    trainer.run_training(_cfg(prepared.manifest, out, max_steps=2, validate_every=0, face_crop="wide"))
    assert seen and {style for style, _ in seen} == {"wide"}
    crops = {c.tobytes() for c in (wide[i].face_crop for i in range(len(wide)))}
    assert all(c.tobytes() in crops for _, c in seen)  # each one a wide crop of a training image
    assert FaceMakeUp.from_pretrained(tiny_preset[0], out / "adapter.safetensors").cfg.face_crop == "wide"
    assert FaceMakeUp.from_pretrained(*tiny_preset).cfg.face_crop == "aligned"  # the preset's adapter is untouched
    # a LoRA rides on its adapter's style: asking for another one is refused before training
    with pytest.raises(UsageError, match="same"):
        trainer.run_training(_cfg(prepared.manifest, tmp_path / "lora", mode="lora", max_steps=1,
                                  face_crop="wide"))


def _tokenizer(tiny_preset):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tiny_preset[0] / "tokenizer")


def test_resume_latest_without_a_checkpoint_says_it_starts_at_step_0(prepared, tmp_path):
    from fmu.training.trainer import run_training

    out = tmp_path / "fresh"
    lines = []
    summary = run_training(_cfg(prepared.manifest, out, max_steps=1, resume="latest", validate_every=0,
                                checkpoint_every=0, lambda_id=0), log=lines.append)
    assert [h["step"] for h in summary.losses] == [1]
    notice = [line for line in lines if "no checkpoint" in line]
    assert notice == [f"--resume latest: no checkpoint in {out / 'checkpoints'}, training starts at step 0"]


def test_progress_line_shows_each_loss_term_and_the_step_rate(prepared, tmp_path):
    """The trainer reports to the progress object it is given (the CLI's rich bar): one update per
    optimizer step, carrying the step and each loss term of that step (the values losses.jsonl logs);
    the bar renders them with steps/s and the ETA."""
    import io

    from rich.console import Console

    from fmu.console import progress_bar
    from fmu.training.trainer import loss_line, run_training

    bar = progress_bar()  # never started: nothing is drawn, the table is rendered below
    calls = []

    class Recorder:  # forwards to the real bar, keeping what the trainer sent
        def add_task(self, *args, **kwargs):
            calls.append(("add", kwargs))
            return bar.add_task(*args, **kwargs)

        def update(self, task, **kwargs):
            calls.append(("update", kwargs))
            bar.update(task, **kwargs)

    out = tmp_path / "t"
    run_training(_cfg(prepared.manifest, out, max_steps=3, validate_every=0, checkpoint_every=0), progress=Recorder())
    assert calls[0] == ("add", {"total": 3, "completed": 0, "unit": "steps"})
    logged = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    updates = [kw for kind, kw in calls if kind == "update"]
    assert [u["completed"] for u in updates] == [1, 2, 3]
    assert [u["detail"] for u in updates] == [loss_line(row) for row in logged]
    for name in ("loss", "mse", "map", "id"):
        assert f"{name} {logged[-1][name]:.4g}" in updates[-1]["detail"]
    screen = Console(file=io.StringIO(), width=200)
    screen.print(bar.make_tasks_table(bar.tasks))
    rendered = screen.file.getvalue()
    assert "3/3" in rendered and "steps/s" in rendered and "mse " in rendered and "ETA" in rendered

