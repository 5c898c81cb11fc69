"""Sustained frames/s and decision latency of ``kdcore detect`` on replay, teacher vs student.

    make demo   # trains the models this reads
    python benchmarks/bench_detect.py [--experiment-root experiments/demo] [--frames 500000]

Replays synthetic traffic of the demo's vehicle (its test captures, repeated up to ``--frames``)
as fast as possible through each trained GAT and VGAE, on one CPU thread, and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from kdcore.data.formats import read_capture
from kdcore.data.frames import FrameTable
from kdcore.detect import Detector, replay_chunks

MODELS = {
    "gat_teacher": "supervised/gat/teacher/no-kd/curriculum/models/gat_curriculum.pth",
    "gat_student": "supervised/gat/student/with-kd/curriculum/models/gat_curriculum.pth",
    "vgae_teacher": "unsupervised/vgae/teacher/no-kd/autoencoder/models/vgae_autoencoder.pth",
    "vgae_student": "unsupervised/vgae/student/with-kd/autoencoder/models/vgae_autoencoder.pth",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment-root", default="experiments/demo")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--frames", type=int, default=500_000)
    args = parser.parse_args()
    torch.set_num_threads(1)

    root = Path(args.experiment_root)
    captures = sorted((root / "data" / args.dataset).glob("seed-*/test_*/*.csv"))
    if not captures:
        raise SystemExit(f"no test captures under {root / 'data' / args.dataset}: run `make demo` first")
    parts = [read_capture(path) for path in captures]
    table = FrameTable.concat(parts * (args.frames // sum(map(len, parts)) + 1)).take(slice(0, args.frames))
    table = FrameTable.from_frames(range(len(table)), table.can_id, table.dlc, table.payload)  # one clock

    results = {}
    for name, relative in MODELS.items():
        path = root / "automotive" / args.dataset / relative
        if not path.is_file():
            continue
        detector = Detector(path)
        summary = detector.detect(replay_chunks(table, detector.window, real_time=False)).as_dict()
        results[name] = {k: summary[k] for k in ("frames_per_s", "latency_ms_p50", "latency_ms_p99", "windows")}
    for model in ("gat", "vgae"):
        if f"{model}_teacher" in results and f"{model}_student" in results:
            results[f"{model}_student_speedup"] = round(
                results[f"{model}_student"]["frames_per_s"] / results[f"{model}_teacher"]["frames_per_s"], 2
            )
    results["machine"] = f"{platform.machine()} {os.cpu_count()} cpus, 1 torch thread"
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
