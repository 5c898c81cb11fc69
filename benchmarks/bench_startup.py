"""Whole-process time of the commands that only read data: what a user waits for at the shell.

    python benchmarks/bench_startup.py [--repeat 5]

Each command runs as a fresh ``kdcore`` process; a figure is the best of ``--repeat`` runs (the
least disturbed by whatever else the machine does). The 68 k-row capture is synthetic traffic in
the can-train-and-test layout, written once to a temporary folder; with ``../shared`` present,
a real ROAD capture (73 k rows, StatGraph layout) is timed too. ``data build`` starts each run
with an empty cache, so it reads and builds every time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KDCORE = [sys.executable, "-m", "kdcore"]
ROWS = 68_000
ROAD = Path(__file__).resolve().parents[2] / "shared/data/real/road-statgraph/Deal_correlated_signal_attack_1_masquerade.csv"


def best_seconds(arguments: list[str], repeat: int, before=None) -> float:
    """The fastest of ``repeat`` whole-process runs of ``kdcore ARGUMENTS``."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        started = time.perf_counter()
        subprocess.run([*KDCORE, *arguments], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return round(min(times), 3)


def synthetic_capture(folder: Path) -> Path:
    from kdcore.data.formats.writers import write_csv
    from kdcore.data.traffic import generate_traffic, inject

    table = inject(generate_traffic(ROWS / 1500, seed=0), "dos", seed=0)
    path = folder / "drive.csv"
    write_csv(table.take(slice(0, ROWS)), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="kdcore-bench-startup-"))
    cache = scratch / "cache"
    try:
        capture = synthetic_capture(scratch)
        rows = sum(1 for _ in capture.open()) - 1
        build = ["data", "build", str(capture), "--cache-dir", str(cache), "--json"]
        results = {
            "cli_startup_s": best_seconds(["--help"], args.repeat),
            "plugins_s": best_seconds(["plugins", "--json"], args.repeat),
            "data_list_s": best_seconds(["data", "list", "--json"], args.repeat),
            "data_inspect_68k_rows_s": best_seconds(["data", "inspect", str(capture), "--json"], args.repeat),
            "data_build_68k_rows_s": best_seconds(build, args.repeat, before=lambda: shutil.rmtree(cache, ignore_errors=True)),
            "rows": rows,
            "repeat": args.repeat,
        }
        if ROAD.is_file():
            results["data_inspect_road_73k_rows_s"] = best_seconds(["data", "inspect", str(ROAD), "--json"], args.repeat)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
