"""How fast the CLI answers: `fmu --help`, `fmu generate --help`, a usage error (a missing manifest),
each as a fresh process, median of N runs; and which heavy libraries each one imported (none of
torch / diffusers / transformers may load for the help; the goal is < 1 s wall on the CI machine).
Then the re-run of a finished job (100 rows, tiny preset; 4 with --quick): the whole `fmu generate`
again, which has nothing to do (goal < 3 s on the CPU; it imports none of torch / diffusers /
transformers: the options are checked from configs and headers, and the tokenizer loads only when a
row needs work).

    python bench/cli_start.py            # 5 runs each
    python bench/cli_start.py --quick    # 1 run each (CI): prints the figures, checks the imports
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "polars", "cv2", "insightface", "mediapipe", "huggingface_hub")
PROBE = """
import json, sys
sys.argv = ["fmu", *json.loads(sys.argv[1])]
from fmu.app import main
try:
    main()
except SystemExit:
    pass
print("IMPORTED=" + json.dumps(sorted(m for m in {heavy} if m in sys.modules)))
"""

CASES = {"fmu --help": ["--help"], "fmu generate --help": ["generate", "--help"],
         "usage error (missing manifest)": ["generate", "/nonexistent/manifest.csv"]}


def run(args: list[str]) -> tuple[float, float, list[str]]:
    """(wall seconds, CPU seconds of the child, heavy modules it imported). The CPU time is what the
    start-up costs; the wall time also holds the wait for a core on a loaded machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), json.dumps(args)], cwd=ROOT,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("IMPORTED=")), None)
    if line is None:
        raise SystemExit(f"fmu {' '.join(args)} ended before the probe's last line: {proc.stderr[-2000:]}")
    return seconds, cpu, json.loads(line[len("IMPORTED="):])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs
    bad = False
    for name, cli in CASES.items():
        times, cpus, imported = [], [], []
        for _ in range(runs):
            seconds, cpu, imported = run(cli)
            times.append(seconds)
            cpus.append(cpu)
        heavy = [m for m in imported if m in ("torch", "diffusers", "transformers")]
        bad |= bool(heavy) and "--help" in cli
        print(f"{name:32s} median {statistics.median(times):.2f} s wall, {statistics.median(cpus):.2f} s CPU "
              f"over {runs} run(s); "
              f"heavy libraries imported: {', '.join(imported) or 'none'}")
    rerun_case(runs, rows=4 if args.quick else 100)
    return 1 if bad else 0


def rerun_case(runs: int, rows: int) -> None:
    """A `rows`-row job generated once (tiny preset, 1 step), then the same command again: the
    median wall and CPU seconds of the re-runs, which find every image done."""
    import shutil
    import tempfile

    import polars as pl

    from fmu.manifests.demo import demo_photos

    with tempfile.TemporaryDirectory(prefix="fmu-rerun-") as tmp:
        folder = Path(tmp)
        shutil.copy(demo_photos()["astronaut.png"], folder / "astronaut.png")
        pl.DataFrame({"id": [f"r{i:03d}" for i in range(rows)], "reference": "astronaut.png",
                      "prompt": [f"a photo, variant {i}" for i in range(rows)]}).write_csv(folder / "m.csv")
        cli = ["generate", str(folder / "m.csv"), "--out", str(folder / "run"), "--steps", "1", "--no-shading",
               "--batch-size", "20"]
        first = subprocess.run([sys.executable, "-m", "fmu.app", *cli], cwd=ROOT, capture_output=True, text=True)
        if first.returncode != 0:
            raise SystemExit(f"the first run failed: {first.stderr[-2000:]}")
        measured = [run(cli) for _ in range(runs)]
        done = pl.read_parquet(folder / "run" / "results.parquet")["status"].to_list()
    assert done == ["ok"] * rows, done
    wall, cpu = statistics.median(m[0] for m in measured), statistics.median(m[1] for m in measured)
    print(f"{f're-run of a finished {rows}-row job':32s} median {wall:.2f} s wall, {cpu:.2f} s CPU over {runs} "
          f"run(s) (goal < 3 s); heavy libraries imported: {', '.join(measured[-1][2]) or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
