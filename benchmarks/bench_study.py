"""Wall time of one study on two independent datasets, sequential executor against Ray, side by side.

    python benchmarks/bench_study.py [--epochs 4] [--datasets set_01,set_02]

Writes two synthetic vehicles (seeds 1 and 2) in the can-train-and-test layout, one per dataset
name, then runs ``kdcore pipeline --datasets ...`` twice from a cold start into two experiment
roots: ``--executor sequential`` and ``--executor ray`` (a local Ray instance on every core of
this machine). Each stage trains on one torch thread (``num_threads`` = 1, the default), so Ray
runs as many stages at once as there are cores. Both wall times count everything a user waits
for: the process start, Ray's start, the graph build, training and the report.

``study_parallel_speedup`` = sequential seconds / Ray seconds. ``same_metrics`` says whether every
run's F1, AUROC, FPR and per-test-set figures are identical under both executors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METRICS = ("f1", "auroc", "fpr", "test_sets")


def run_pipeline(executor: str, datasets: str, data_root: Path, experiment_root: Path, epochs: int) -> float:
    command = [sys.executable, "-m", "kdcore", "pipeline", "--executor", executor, "--datasets", datasets,
               "--data-root", str(data_root), "--experiment-root", str(experiment_root),
               "--set", f"max_epochs={epochs}", "--set", "progress_bar=false"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{executor} pipeline failed (exit {result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return seconds


def run_metrics(experiment_root: Path) -> dict[str, dict]:
    return {
        str(path.parent.relative_to(experiment_root)): {key: json.loads(path.read_text()).get(key) for key in METRICS}
        for path in sorted(experiment_root.rglob("metrics.json"))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--datasets", default="set_01,set_02", help="Two names of datasets that read a can-train-and-test folder.")
    args = parser.parse_args()
    from kdcore.data.synthetic import generate_into

    names = args.datasets.split(",")
    with tempfile.TemporaryDirectory(prefix="kdcore-bench-study-") as scratch:
        scratch = Path(scratch)
        for seed, name in enumerate(names, 1):
            generate_into(scratch / "data" / name, seed=seed)
        seconds = {executor: run_pipeline(executor, args.datasets, scratch / "data", scratch / executor, args.epochs)
                   for executor in ("sequential", "ray")}
        sequential, ray = run_metrics(scratch / "sequential"), run_metrics(scratch / "ray")
    print(json.dumps({
        "study_parallel_speedup": round(seconds["sequential"] / seconds["ray"], 3),
        "sequential_seconds": round(seconds["sequential"], 1),
        "ray_seconds": round(seconds["ray"], 1),
        "same_metrics": sequential == ray and len(sequential) == 8 * len(names),
        "runs": len(sequential),
        "datasets": names,
        "epochs": args.epochs,
        "cpus": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    main()
