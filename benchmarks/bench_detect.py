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
  is due (through the traced scorer); a window's decision latency runs from that moment to its
  decision, waiting included;
- ``window_scoring_ms``: the median time to score one prepared window alone, back to back (caches
  hot), through the traced scorer and eagerly through PyG.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from kdcore.data.formats import read_capture
from kdcore.data.frames import FrameTable
from kdcore.data.windows import build_window_graphs
from kdcore.detect import CHUNK_WINDOWS, Detector, one_window_batch, replay_chunks
from kdcore.threads import torch_threads

MODELS = {
    "gat_teacher": "supervised/gat/teacher/no-kd/curriculum/models/gat_curriculum.pth",
    "gat_student": "supervised/gat/student/with-kd/curriculum/models/gat_curriculum.pth",
    "vgae_teacher": "unsupervised/vgae/teacher/no-kd/autoencoder/models/vgae_autoencoder.pth",
    "vgae_student": "unsupervised/vgae/student/with-kd/autoencoder/models/vgae_autoencoder.pth",
}
BUS_RATE = 9_000  # frames/s of a saturated 1 Mbit/s bus (8-byte standard frames, 111 bits each)
WARM_UP_WINDOWS = 20  # scored first and not counted: the first calls build PyG's and torch's caches
SCORING_WINDOWS = 300  # windows timed one by one for window_scoring_ms


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
            "window_scoring_ms": window_scoring_ms(detector, table),
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


def window_scoring_ms(detector: Detector, table: FrameTable) -> dict[str, float]:
    """Median milliseconds to score one window alone: traced (when the trace passed its check) and eager."""
    frames = table.take(slice(0, SCORING_WINDOWS * detector.window))
    prepared = detector.preprocessing.apply(build_window_graphs(frames, detector.window, detector.window))
    windows = [(prepared[i].x, prepared[i].id_token, prepared[i].edge_index) for i in range(len(prepared))]
    scorers = {"eager": lambda window: detector.score([one_window_batch(*window)])}
    if detector.score_window is not None:
        scorers["traced"] = lambda window: detector.score_window(*window)
    result = {}
    with torch_threads(1), torch.inference_mode():
        for name, score in scorers.items():
            times = []
            for window in windows:
                start = time.perf_counter()
                score(window)
                times.append(time.perf_counter() - start)
            result[name] = round(float(np.median(times)) * 1000, 3)
    return result


if __name__ == "__main__":
    main()
