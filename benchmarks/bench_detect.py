"""Sustained frames/s and decision latency of ``kdcore detect`` on replay, teacher vs student.

    make demo   # trains the models this reads
    python benchmarks/bench_detect.py [--experiment-root experiments/demo] [--frames 300000] [--latency-seconds 10]

Replays synthetic traffic of the demo's vehicle (its test captures, repeated, timed as a saturated
1 Mbit/s bus) through each trained GAT and VGAE on one CPU thread, twice, and prints one JSON object:

- ``frames_per_s``: as fast as possible (windows scored ``CHUNK_WINDOWS`` at a time), sustained;
  ``chunk_ms_p50``/``p99``: the time to decide one such chunk — the latency of a detector
  running flat out (every frame of a fast replay is there at once, so it says more about the
  chunk size than about a bus);
- ``latency_ms_p50``/``p99``: at the bus's own pace, every window scored as soon as its last frame
  is due; a window's decision latency runs from that moment to its decision, waiting included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np

from kdcore.data.formats import read_capture
from kdcore.data.frames import FrameTable
from kdcore.detect import CHUNK_WINDOWS, Detector, replay_chunks

MODELS = {
    "gat_teacher": "supervised/gat/teacher/no-kd/curriculum/models/gat_curriculum.pth",
    "gat_student": "supervised/gat/student/with-kd/curriculum/models/gat_curriculum.pth",
    "vgae_teacher": "unsupervised/vgae/teacher/no-kd/autoencoder/models/vgae_autoencoder.pth",
    "vgae_student": "unsupervised/vgae/student/with-kd/autoencoder/models/vgae_autoencoder.pth",
}
BUS_RATE = 9_000  # frames/s of a saturated 1 Mbit/s bus (8-byte standard frames, 111 bits each)
WARM_UP_WINDOWS = 20  # scored first and not counted: the first calls build PyG's and torch's caches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment-root", default="experiments/demo")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--frames", type=int, default=300_000, help="frames replayed as fast as possible")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="seconds of bus-paced replay")
    args = parser.parse_args()

    root = Path(args.experiment_root)
    captures = sorted((root / "data" / args.dataset).glob("seed-*/test_*/*.csv"))
    if not captures:
        raise SystemExit(f"no test captures under {root / 'data' / args.dataset}: run `make demo` first")
    parts = [read_capture(path) for path in captures]
    paced_frames = int(args.latency_seconds * BUS_RATE)
    needed = max(args.frames, paced_frames)
    table = FrameTable.concat(parts * (needed // sum(map(len, parts)) + 1)).take(slice(0, needed))
    table = FrameTable.from_frames(np.arange(len(table)) / BUS_RATE, table.can_id, table.dlc, table.payload)

    results = {}
    for name, relative in MODELS.items():
        path = root / "automotive" / args.dataset / relative
        if not path.is_file():
            continue
        detector = Detector(path)
        detector.detect(replay_chunks(table.take(slice(0, WARM_UP_WINDOWS * detector.window)), detector.window, real_time=False))
        sustained = detector.detect(replay_chunks(table.take(slice(0, args.frames)), detector.window, real_time=False)).as_dict()
        paced = detector.detect(replay_chunks(table.take(slice(0, paced_frames)), detector.window, real_time=True)).as_dict()
        results[name] = {
            "frames_per_s": sustained["frames_per_s"],
            "chunk_ms_p50": sustained["latency_ms_p50"],
            "chunk_ms_p99": sustained["latency_ms_p99"],
            "latency_ms_p50": paced["latency_ms_p50"],
            "latency_ms_p99": paced["latency_ms_p99"],
            "windows": sustained["windows"],
            "latency_windows": paced["windows"],
        }
    for model in ("gat", "vgae"):
        if f"{model}_teacher" in results and f"{model}_student" in results:
            results[f"{model}_student_speedup"] = round(
                results[f"{model}_student"]["frames_per_s"] / results[f"{model}_teacher"]["frames_per_s"], 2
            )
    results["bus_rate_frames_per_s"] = BUS_RATE
    results["chunk_windows"] = CHUNK_WINDOWS
    results["machine"] = f"{platform.machine()} {os.cpu_count()} cpus, 1 torch thread (load average {os.getloadavg()[0]:.1f})"
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
