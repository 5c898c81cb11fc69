"""A detector that runs for days: ten million frames or more through ``kdcore detect``, memory flat.

    make demo   # trains the models this reads
    python benchmarks/bench_soak.py [--experiment-root experiments/demo] [--frames 10000000] [--model gat_student]

Loops the demo's test captures (DoS, fuzzing and spoofing bursts among normal traffic), each lap
following the last in time, as fast as possible through ``Detector.detect`` on one torch thread,
with incidents (suspects, attack classes) written to a file as ``kdcore detect`` writes them.
Prints one JSON object: ``frames``, ``frames_per_s``, ``latency_ms_p50``/``p99`` (the time to
decide a chunk of ``CHUNK_WINDOWS`` windows), ``incidents``, ``alert_windows``, the process's
resident memory after the first ``WARM_UP_FRAMES`` (``rss_mib_start``) and at the end
(``rss_mib_end``), and ``rss_growth`` (end / start − 1).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import numpy as np
import psutil

from kdcore.bus import Chunk
from kdcore.data.formats import read_capture
from kdcore.data.frames import FrameTable
from kdcore.detect import CHUNK_WINDOWS, Detector

MODELS = {
    "gat_student": "supervised/gat/student/with-kd/curriculum/models/gat_curriculum.pth",
    "gat_teacher": "supervised/gat/teacher/no-kd/curriculum/models/gat_curriculum.pth",
    "vgae_student": "unsupervised/vgae/student/with-kd/autoencoder/models/vgae_autoencoder.pth",
}
WARM_UP_FRAMES = 500_000  # memory is measured from here: caches built, the latency buffer's first part filled


def laps(lap: FrameTable, frames: int, window: int, rss: list[float]) -> Iterator[Chunk]:
    """``frames`` frames of ``lap`` repeated, each repeat shifted to start where the last ended,
    ``CHUNK_WINDOWS`` windows at a time; the resident memory noted once ``WARM_UP_FRAMES`` have gone."""
    step, duration, sent = CHUNK_WINDOWS * window, float(lap.timestamp[-1] - lap.timestamp[0]) + 1e-3, 0
    for number in range(frames // len(lap) + 1):
        shifted = attrs.evolve(lap, timestamp=lap.timestamp + number * duration)
        for begin in range(0, len(lap), step):
            chunk = shifted.take(slice(begin, min(begin + step, len(lap), begin + frames - sent)))
            if not len(chunk):
                return
            if sent < WARM_UP_FRAMES <= sent + len(chunk):
                rss.append(psutil.Process().memory_info().rss)
            sent += len(chunk)
            yield chunk, time.perf_counter()


def one_after_another(tables: list[FrameTable]) -> FrameTable:
    """The captures in a row, each shifted in time to start just after the one before."""
    shifted, end = [], 0.0
    for table in tables:
        table = table.take(np.argsort(table.timestamp, kind="stable"))
        shifted.append(attrs.evolve(table, timestamp=table.timestamp - table.timestamp[0] + end))
        end = float(shifted[-1].timestamp[-1]) + 1e-3
    return FrameTable.concat(shifted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment-root", default="experiments/demo")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--model", default="gat_student", choices=sorted(MODELS))
    parser.add_argument("--frames", type=int, default=10_000_000)
    args = parser.parse_args()

    root = Path(args.experiment_root)
    captures = sorted((root / "data" / args.dataset).glob("seed-*/test_*/*.csv"))
    checkpoint = root / "automotive" / args.dataset / MODELS[args.model]
    if not captures or not checkpoint.is_file():
        raise SystemExit(f"no demo models or test captures under {root}: run `make demo` first")
    lap = one_after_another([read_capture(path) for path in captures])
    detector = Detector(checkpoint)
    rss: list[float] = []
    with tempfile.TemporaryDirectory() as folder, open(Path(folder) / "alerts.jsonl", "w") as alerts:
        started = time.perf_counter()
        summary = detector.detect(laps(lap, args.frames, detector.window, rss), alerts).as_dict()
        seconds = time.perf_counter() - started
        end = psutil.Process().memory_info().rss
        alert_bytes = alerts.tell()
    print(json.dumps({
        "model": args.model,
        "frames": summary["frames"],
        "seconds": round(seconds, 1),
        "frames_per_s": summary["frames_per_s"],
        "latency_ms_p50": summary["latency_ms_p50"],
        "latency_ms_p99": summary["latency_ms_p99"],
        "windows": summary["windows"],
        "alert_windows": summary["alert_windows"],
        "incidents": summary["incidents"],
        "alert_file_bytes": alert_bytes,
        "rss_mib_start": round(rss[0] / 2**20, 1),
        "rss_mib_end": round(end / 2**20, 1),
        "rss_growth": round(end / rss[0] - 1, 4),
        "lap_frames": len(lap),
        "machine": f"{os.cpu_count()} cpus, 1 torch thread (load average {os.getloadavg()[0]:.1f})",
    }, indent=2))


if __name__ == "__main__":
    main()
