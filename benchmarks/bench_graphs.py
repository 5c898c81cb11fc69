"""Window → graph construction speed and memory, printed as one JSON object.

    python benchmarks/bench_graphs.py [--frames 1000000] [--window 100] [--stride 100]

Times ``build_window_graphs`` on realistic synthetic traffic (best of ``--repeat`` runs, one
process, numpy single-threaded) and, for scale, a plain per-window Python implementation of the
same graphs on a slice of the data. Peak RSS is the whole process's, after both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


from kdcore.data.traffic import generate_traffic  # noqa: E402
from kdcore.data.windows import build_window_graphs  # noqa: E402


def per_window_reference(table, window: int, stride: int) -> int:
    """Graphs built one window at a time with Python dicts, as straightforward code would."""
    graphs = 0
    for start in range(0, len(table) - window + 1, stride):
        ids = table.can_id[start : start + window].tolist()
        payload = table.payload[start : start + window]
        nodes: dict[int, list[int]] = {}
        for position, can_id in enumerate(ids):
            nodes.setdefault(can_id, []).append(position)
        edges: dict[tuple[int, int], int] = {}
        for a, b in zip(ids, ids[1:]):
            edges[(a, b)] = edges.get((a, b), 0) + 1
        _features = [payload[positions].mean(axis=0) for positions in nodes.values()]
        graphs += 1
    return graphs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--stride", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference-frames", type=int, default=100_000)
    args = parser.parse_args()

    table = generate_traffic(args.frames / 1500.0, seed=0).take(slice(0, args.frames))  # buses run 1.6-2.4 k frames/s
    timings = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        graphs = build_window_graphs(table, args.window, args.stride)
        timings.append(time.perf_counter() - started)
    best = min(timings)

    reference_table = table.take(slice(0, args.reference_frames))
    started = time.perf_counter()
    per_window_reference(reference_table, args.window, args.stride)
    reference_seconds = time.perf_counter() - started
    vectorised_rate = len(table) / best
    reference_rate = len(reference_table) / reference_seconds

    print(json.dumps({
        "frames": len(table),
        "window": args.window,
        "stride": args.stride,
        "graphs": len(graphs),
        "graph_build_seconds": round(best, 4),
        "graph_build_frames_per_s": round(vectorised_rate),
        "per_window_reference_frames_per_s": round(reference_rate),
        "speedup_vs_per_window_reference": round(vectorised_rate / reference_rate, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_implementation()} {platform.python_version()}",
    }, indent=2))


if __name__ == "__main__":
    main()
