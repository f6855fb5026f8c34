"""How fast the CLI answers: `fmu --help`, `fmu generate --help`, a usage error (a missing manifest),
each as a fresh process, median of N runs; and which heavy libraries each one imported (none of
torch / diffusers / transformers may load for the help; the goal is < 1 s wall on the CI machine).

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
    line = next(x for x in proc.stdout.splitlines() if x.startswith("IMPORTED="))
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
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
