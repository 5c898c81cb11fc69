"""Every benchmark, each in its own process, gathered into one JSON object (``make bench`` → bench.json).

    python benchmarks/run_all.py [--out bench.json]

The headline keys come first — ``graph_build_frames_per_s``, ``kd_overhead_ratio``,
``kd_overhead_ratio_cached``, ``student_infer_speedup``, ``peak_rss_mib_1m_frames``, ``cli_startup_s``,
``data_inspect_68k_rows_s``, ``soak_rss_growth``, ``soak_frames_per_s``, ``study_parallel_speedup``, and the transfer keys (``transfer_min_auroc_before``, ``transfer_min_f1_after``,
``transfer_max_fpr_after``, ``calibration_seconds_max``, ``road_min_f1_gat``, ``road_min_f1_gat_trained_signals``,
``localisation_min_top1``, ``class_accuracy_min``, ``unseen_as_unknown_min``, ``incident_localisation_min_top1``,
``incident_class_accuracy_min``, ``incident_delay_windows_max``, and ``civic8th_trained_`` before the
first three: the vehicles trained on civic8th instead of the camaro) — then each
script's full output under its own name, and the machine. Each script runs in a fresh process, so
one's memory does not count against the next; they run one after another, so they do not compete
for cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "startup": ["bench_startup.py"],
    "graphs": ["bench_graphs.py"],
    "readers": ["bench_readers.py"],
    "training": ["bench_train.py"],
    "large": ["bench_large.py"],
    "detect": ["bench_detect.py"],  # reads experiments/demo
    "soak": ["bench_soak.py"],  # reads experiments/demo
    "transfer": ["bench_transfer.py"],  # reads ../shared/data/real; skipped without it
    "transfer_civic8th": ["bench_transfer.py", "--part", "vehicles", "--train-vehicle", "civic8th"],  # trained on another car
    "study": ["bench_study.py"],
}
DEMO_ROOT = Path("experiments/demo")
TRANSFER_KEYS = ("transfer_min_auroc_before", "transfer_min_f1_after", "transfer_max_fpr_after", "calibration_seconds_max", "road_min_f1_gat",
                 "road_min_f1_gat_trained_signals", "localisation_min_top1", "class_accuracy_min", "unseen_as_unknown_min",
                 "incident_localisation_min_top1", "incident_class_accuracy_min", "incident_delay_windows_max",
                 "kd_sets_short_of_teacher", "kd_sets_compared", "fusion_sets_below_better_input", "fusion_sets_compared")
CIVIC8TH_KEYS = ("transfer_min_auroc_before", "transfer_min_f1_after", "transfer_max_fpr_after")  # prefixed civic8th_trained_


def run_script(args: list[str]) -> dict:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"benchmarks/{args[0]} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    output = json.loads(result.stdout)
    output["script_seconds"] = round(time.perf_counter() - started, 1)
    return output


def ensure_demo(root: Path) -> None:
    """``bench_detect.py`` replays through the demo's trained models: train them once if missing."""
    if (root / "automotive").is_dir():
        return
    print(f"training the demo models into {root} (make demo) ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "kdcore", "pipeline", "--experiment-root", str(root), "--set", "progress_bar=false"],
                   check=True, capture_output=True)


def machine() -> dict:
    info = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        info["cpu"] = names[0] if names else None
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("--only", nargs="*", choices=sorted(SCRIPTS), help="Run only these benchmarks.")
    args = parser.parse_args()

    results = {}
    for name, script in SCRIPTS.items():
        if args.only and name not in args.only:
            continue
        if name in ("detect", "soak"):
            ensure_demo(DEMO_ROOT)
        print(f"benchmarks/{script[0]} ...", file=sys.stderr, flush=True)
        results[name] = run_script(script)

    if not args.only or "large" in args.only:
        sys.path.insert(0, str(HERE))
        from bench_large import peak_rss_mib

        results.setdefault("large", {})["peak_rss_mib_1m_frames"] = peak_rss_mib(1_000_000)
    training, graphs, large = results.get("training", {}), results.get("graphs", {}), results.get("large", {})
    startup = results.get("startup", {})
    bench = {
        "graph_build_frames_per_s": graphs.get("graph_build_frames_per_s"),
        "kd_overhead_ratio": training.get("kd_overhead_ratio"),
        "kd_overhead_ratio_cached": training.get("kd_overhead_ratio_cached"),
        "student_infer_speedup": training.get("student_infer_speedup"),
        "peak_rss_mib_1m_frames": large.get("peak_rss_mib_1m_frames"),
        "cli_startup_s": startup.get("cli_startup_s"),
        "data_inspect_68k_rows_s": startup.get("data_inspect_68k_rows_s"),
        "soak_rss_growth": results.get("soak", {}).get("rss_growth"),
        "soak_frames_per_s": results.get("soak", {}).get("frames_per_s"),
        "study_parallel_speedup": results.get("study", {}).get("study_parallel_speedup"),
        **{key: results.get("transfer", {}).get(key) for key in TRANSFER_KEYS},
        **{f"civic8th_trained_{key}": results.get("transfer_civic8th", {}).get(key) for key in CIVIC8TH_KEYS},
        **results,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    text = json.dumps(bench, indent=2)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
