"""A generate-like run folder to score, shared by the score engine tests (test_score_engine.py,
test_ray_engine.py): 10 outputs of three people (shifted, brightened, mirrored copies of the
references), a cat (no face), an unreadable output and a row whose reference is gone; and the
comparison of two scores of it."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from fmu.core.images import save_png


def make_score_run(run: Path, photos: dict[str, Path]) -> Path:
    refs = {name: np.asarray(Image.open(photos[name]).convert("RGB")) for name in
            ("astronaut.png", "tom_hanks.png", "t1.jpg")}
    rows = []
    for i in range(10):
        name = list(refs)[i % 3]
        img = np.clip(refs[name].astype(np.int16) + 6 * (i // 3), 0, 255).astype(np.uint8)
        save_png(run / "images" / f"r{i:02d}_0.png", img[:, ::-1] if i % 2 else img)
        rows.append(dict(id=f"r{i:02d}", reference=str(photos[name])))
    shutil.copy(photos["chelsea.png"], run / "images" / "cat_0.png")
    rows.append(dict(id="cat", reference=str(photos["astronaut.png"])))
    (run / "images" / "bad_0.png").write_bytes(b"not a png")
    rows.append(dict(id="bad", reference=str(photos["astronaut.png"])))
    save_png(run / "images" / "gone_0.png", refs["t1.jpg"])
    rows.append(dict(id="gone", reference=str(run / "no_such_reference.png")))
    table = [dict(r, k=0, status="ok", error=None, seed=0, prompt=f"a photo of a person {r['id']}", target=None,
                  image=f"images/{r['id']}_0.png", condition=None) for r in rows]
    pl.DataFrame(table).write_parquet(run / "results.parquet")
    (run / "run.json").write_text(json.dumps({"face_backend": "dlib"}))
    return run


COLUMNS = ("facesim_dlib", "clip_t", "clip_i", "pose_error_deg", "light_error")


def assert_same_scores(got, want, columns=COLUMNS) -> None:
    """Row states equal, metric values equal to float tolerance (units batch differently), summary
    entries equal (counts exactly, means to tolerance)."""
    a, b = got.scores.sort(["id", "k"]), want.scores.sort(["id", "k"])
    assert a["id"].to_list() == b["id"].to_list()
    assert a["status"].to_list() == b["status"].to_list()
    # the reasons name the run's own folder
    assert ([e and e.replace(str(got.out_dir), "RUN") for e in a["error"]]
            == [e and e.replace(str(want.out_dir), "RUN") for e in b["error"]])
    for col in columns:
        x, y = a[col].to_list(), b[col].to_list()
        assert [v is None for v in x] == [v is None for v in y], col
        np.testing.assert_allclose([v for v in x if v is not None], [v for v in y if v is not None],
                                   rtol=1e-5, atol=1e-5, err_msg=col)
    assert a["facesim_dlib_match"].to_list() == b["facesim_dlib_match"].to_list()
    for key, entry in want.summary["metrics"].items():
        other = got.summary["metrics"][key]
        assert other["available"] == entry["available"], key
        for field, value in entry.items():
            if isinstance(value, float):
                assert math.isclose(other[field], value, rel_tol=1e-6, abs_tol=1e-6), (key, field)
            else:
                assert other[field] == value, (key, field)
