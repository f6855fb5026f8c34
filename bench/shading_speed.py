"""Time the shading channel per image on CPU: reconstruction, SH fit and render per backend.

    python bench/shading_speed.py            # 20 timed iterations after one warm-up
    python bench/shading_speed.py --quick    # 1 iteration (CI smoke test)

Uses the shipped astronaut photo (skimage.data.astronaut) in the 512x512 frame. Prints
median milliseconds per image; "first call" includes building the mediapipe graph.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkout import use_this_checkout

use_this_checkout()


def _timed(fn, iterations: int) -> tuple[tuple[float, float], object]:
    """(median, min) milliseconds and the last result. The min is the less noisy figure on a
    shared machine; the median is what a batch sees."""
    times, out = [], None
    for _ in range(iterations):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return (statistics.median(times), min(times)), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one iteration (smoke test)")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    n = 1 if args.quick else args.iterations

    import skimage.data
    from rich.console import Console
    from rich.table import Table

    from fmu.core.images import to_square
    from fmu.core.shading.light_fit import fit_sh
    from fmu.core.shading.reconstruct import reconstruct
    from fmu.core.shading.render import pytorch3d_available, render

    table = Table(title=f"shading channel, {args.size}x{args.size}, {n} iteration(s)")
    for col in ("case", "stage", "median ms", "min ms"):
        table.add_column(col, justify="right" if "ms" in col else "left")
    photo = skimage.data.astronaut()
    # "portrait": the whole photo, face ~3 % of the frame; "close-up": a crop around the
    # face, face ~20 % of the frame (raster work grows with the face's pixel area).
    cases = {"portrait": photo, "close-up": photo[20:220, 120:320]}
    backends = ["cpu"] + (["pytorch3d"] if pytorch3d_available() else [])
    for name, image in cases.items():
        frame = to_square(image, args.size)
        (first, _), mesh = _timed(lambda: reconstruct(frame), 1)
        rows = [("reconstruct, first call", (first, first))]
        t, mesh = _timed(lambda: reconstruct(frame), n)
        rows.append(("reconstruct (mediapipe)", t))
        t, sh = _timed(lambda: fit_sh(frame, mesh), n)
        rows.append(("fit_sh", t))
        for backend in backends:
            render(mesh, sh, args.size, backend=backend)  # warm-up (imports, allocations)
            t, _ = _timed(lambda: render(mesh, sh, args.size, backend=backend), n)
            rows.append((f"render ({backend})", t))
        for stage, (med, low) in rows:
            table.add_row(name, stage, f"{med:.1f}", f"{low:.1f}")
    if "pytorch3d" not in backends:
        table.add_row("", "render (pytorch3d)", "not importable", "")
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
