"""FaceSim throughput: `fmu score`'s pipeline against a per-image detect-then-embed loop.

Both run the same offline dlib model on the same synthetic run (shipped photos as
references, k re-encoded / flipped / rotated variants of each as outputs), in one process,
one after the other. The pipeline decodes in a thread pool, embeds each reference once,
embeds only the chosen face of each image and runs the recognition network on batches;
the baseline does, per row, load reference -> detect+embed -> load output -> detect+embed.

    python bench/score_speed.py            # prints images/second and the ratio (goal >= 2x)
    python bench/score_speed.py --quick    # tiny run for CI: asserts counts and equal values only
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkout import use_this_checkout

use_this_checkout()


def _photos() -> list[np.ndarray]:
    import insightface
    import skimage.data

    from fmu.core.images import load_rgb

    t1 = load_rgb(os.path.join(os.path.dirname(insightface.__file__), "data", "images", "t1.jpg"))
    people = [skimage.data.astronaut()]
    for x1, y1, x2, y2 in [(65, 284, 169, 388), (452, 300, 577, 424), (734, 365, 837, 469), (883, 89, 987, 192)]:
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        people.append(np.ascontiguousarray(t1[max(0, cy - 150):cy + 150, max(0, cx - 150):cx + 150]))
    return people


def _variant(image: np.ndarray, k: int) -> bytes:
    from PIL import Image

    img = Image.fromarray(image)
    if k % 4 == 1:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    elif k % 4 == 2:
        img = img.rotate(6, resample=Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG" if k % 4 == 3 else "PNG", quality=80)
    return buf.getvalue()


def build_run(root: Path, n_refs: int, k: int) -> Path:
    import polars as pl

    from fmu.core.images import save_png

    run = root / "run"
    (run / "images").mkdir(parents=True)
    rows = []
    people = _photos()
    for r in range(n_refs):
        person = people[r % len(people)]
        ref = root / "refs" / f"ref{r}.png"
        save_png(ref, person)
        for j in range(k):
            name = f"images/p{r}_{j}.png"
            (run / name).write_bytes(_variant(person, j + r))
            rows.append(dict(id=f"p{r}", k=j, status="ok", error=None, seed=j, prompt="a person",
                             reference=str(ref), target=None, image=name, condition=None))
    pl.DataFrame(rows).write_parquet(run / "results.parquet")
    (run / "run.json").write_text(json.dumps({"face_backend": "dlib", "face_models": None}))
    return run


def baseline(run: Path, backend) -> list[float | None]:
    """Per image: decode, detect and embed every face, keep the most confident, compare."""
    import polars as pl

    from fmu.core.images import load_rgb

    values = []
    for row in pl.read_parquet(run / "results.parquet").iter_rows(named=True):
        ref_faces = backend.detect(load_rgb(row["reference"]))
        out_faces = backend.detect(load_rgb(run / row["image"]))
        if not ref_faces or not out_faces:
            values.append(None)
            continue
        best = lambda faces: max(faces, key=lambda f: f.score).embedding  # noqa: E731
        values.append(backend.similarity(best(ref_faces), best(out_faces)))
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=int, default=5, help="references (people)")
    parser.add_argument("--k", type=int, default=4, help="outputs per reference")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 reference x 2 outputs; assert counts only")
    args = parser.parse_args()
    if args.quick:
        args.refs, args.k = 1, 2

    from fmu.core.faces import get_backend
    from fmu.core.scoring import ScoreOptions, score_run

    backend = get_backend("dlib")
    backend.detect(np.zeros((64, 64, 3), np.uint8))     # load the models outside both timings
    with tempfile.TemporaryDirectory() as tmp:
        run = build_run(Path(tmp), args.refs, args.k)
        n = args.refs * args.k
        t0 = time.perf_counter()
        base = baseline(run, backend)
        t_base = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = score_run(run, ScoreOptions(metrics=("facesim",), workers=args.workers, report=False))
        t_pipe = time.perf_counter() - t0
    ours = result.scores["facesim_dlib"].to_list()
    assert len(ours) == len(base) == n, (len(ours), len(base), n)
    assert [v is None for v in ours] == [v is None for v in base]
    assert all(abs(a - b) < 1e-5 for a, b in zip(ours, base) if a is not None), "pipeline and baseline disagree"
    print(f"rows: {n} ({args.refs} references x {args.k} outputs), faces found in {sum(v is not None for v in ours)}")
    print(f"per-image detect-then-embed: {n / t_base:6.2f} images/s ({t_base:.2f} s)")
    print(f"fmu score pipeline:          {n / t_pipe:6.2f} images/s ({t_pipe:.2f} s)")
    print(f"speed-up: {t_base / t_pipe:.2f}x (goal >= 2x; equal values checked)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
