"""Seconds `validate()` takes on one hostile cell: the light value that hung the old nine-numbers
regex (`"1111 " * 14 + "x"`) and a 100 kB cell of every column. Goal: each < 1 s (a row error).

    python bench/manifest_cells.py

The tests (tests/test_corpus_outside.py) check the outcome and that the cell is refused by its
length before any parser sees it; the seconds live here, not in a timed test.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkout import use_this_checkout

use_this_checkout()

import polars as pl  # noqa: E402  (after the checkout's import mapping)

from fmu.core.manifest import validate  # noqa: E402
from fmu.core.manifest.schema import COLUMNS  # noqa: E402

BIG = 100_000


def big_cell(name: str) -> str:
    if name in ("reference", "target"):
        return "a|" * (BIG // 2)
    if name == "light":
        return "1 " * (BIG // 2)
    if name == "layout":
        return "0,0,1,1|" * (BIG // 8)
    return "1" * BIG if COLUMNS[name][0] != pl.String else "a" * BIG


def main() -> None:
    cases = {"light (regex hang)": ("light", "1111 " * 14 + "x")}
    cases.update({f"{name} 100 kB": (name, big_cell(name)) for name in sorted(COLUMNS)})
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for label, (column, cell) in cases.items():
            df = pl.DataFrame([{"id": "r0", "reference": "a.png", "prompt": "a photo", column: cell}])
            start = time.perf_counter()
            result = validate(df, Path(tmp), check_files=False, count_tokens=lambda s: len(s.split()))
            seconds = time.perf_counter() - start
            worst = max(worst, seconds)
            kinds = sorted({p.kind for p in result.problems})
            print(f"{label:24s} {seconds * 1000:8.1f} ms  {', '.join(kinds)}")
    print(f"worst: {worst:.3f} s (goal < 1 s): {'met' if worst < 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
