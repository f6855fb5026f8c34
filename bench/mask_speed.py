"""Region masks per second of the offline `mesh` parser on the shipped photos (CPU).

    python bench/mask_speed.py            # 10 timed iterations per face after one warm-up
    python bench/mask_speed.py --quick    # 1 iteration (CI smoke test: checks counts, not times)

Faces: the astronaut, Tom Hanks and the six people of insightface's t1.jpg, each parsed in its
face frame from its dlib box (what `fmu prepare` does per row). "parse" is one `parse()` (mediapipe
landmarks + selfie segmentation + every region); masks/s counts the regions it produced. "row"
adds what prepare does around it for a caption with six phrases: mask PNGs written, status file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkout import use_this_checkout

use_this_checkout()

CAPTION = "a smiling person with short hair, full lips, thin eyebrows, blue eyes and a small nose"


def _median_ms(fn, iterations: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(iterations):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one iteration (smoke test)")
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args(argv)
    n = 1 if args.quick else args.iterations

    from rich.console import Console
    from rich.table import Table

    from fmu.core.faces import get_backend
    from fmu.core.images import load_rgb
    from fmu.core.regions import get_parser
    from fmu.core.regions.mesh import MESH_REGIONS, MeshParser
    from fmu.manifests.demo import demo_photos
    from fmu.training.masks import MaskMaker

    dlib = get_backend("dlib")
    mesh, no_hair = get_parser("mesh"), MeshParser(hair=False)
    faces = []
    for name, path in demo_photos().items():
        image = load_rgb(path)
        for k, face in enumerate(sorted(dlib.detect(image), key=lambda f: f.bbox[0])):
            faces.append((f"{Path(name).stem} #{k}", image, face.bbox))
    mesh.parse(faces[0][1], faces[0][2])  # warm-up: graphs built, first inferences logged
    no_hair.parse(faces[0][1], faces[0][2])

    table = Table(title=f"mesh parser, {len(faces)} faces, median of {n} iteration(s)")
    for col in ("face", "side px", "parse ms", "regions", "masks/s", "no hair ms", "row ms"):
        table.add_column(col, justify="left" if col == "face" else "right")
    totals = {"ms": 0.0, "regions": 0, "plain": 0.0, "row": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for label, image, box in faces:
            ms, result = _median_ms(lambda image=image, box=box: mesh.parse(image, box), n)
            plain, _ = _median_ms(lambda image=image, box=box: no_hair.parse(image, box), n)

            def row(image=image, box=box, label=label):  # a fresh folder each time: nothing reused
                maker = MaskMaker(Path(tempfile.mkdtemp(dir=tmp)), mesh)
                return maker.row_masks(image, label.replace(" ", "_").replace("#", ""), box, CAPTION, [])

            row_ms, masks = _median_ms(row, n)
            produced = len(result.masks)
            # counts, not times, are what --quick checks: every face is found and masked
            assert produced >= 15 and set(result.masks) <= set(MESH_REGIONS), (label, sorted(result.missing))
            assert len(masks.entries) == 6, (label, masks.unmasked)
            side = int(max(box[2] - box[0], box[3] - box[1]))
            table.add_row(label, str(side), f"{ms:.1f}", str(produced), f"{produced / ms * 1000:.0f}",
                          f"{plain:.1f}", f"{row_ms:.1f}")
            totals["ms"] += ms
            totals["regions"] += produced
            totals["plain"] += plain
            totals["row"] += row_ms
    Console().print(table)
    k = len(faces)
    print(f"all faces: {totals['regions'] / totals['ms'] * 1000:.0f} masks/s, {k / totals['ms'] * 1000:.1f} faces/s "
          f"parsed, {k / totals['row'] * 1000:.1f} rows/s with six phrase masks written; hair (selfie segmentation) "
          f"costs {totals['ms'] / totals['plain']:.2f}x the parse without it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
