"""Building graphs from large captures: time and peak memory of the streaming and whole-file paths.

    python benchmarks/bench_large.py [--sizes 1000000,5000000,10000000] [--whole-up-to 5000000] [--dir /tmp/kdcore-bench-large]

For each size, writes a synthetic ctt capture of that many frames (a vehicle from
``kdcore.data.traffic``, with DoS bursts; kept in ``--dir`` and reused by later runs), then builds
its window graphs into an empty cache in a fresh child process, once streaming (chunked reading,
graphs written to disk as they are built) and once whole-file (sizes up to ``--whole-up-to``).
Peak RSS is the child's own (``ru_maxrss`` from ``wait4``); ``import_rss_mib`` is its RSS after
importing kdcore (torch included), before reading anything. Linux hands a process's peak RSS on
over ``fork``/``exec``, so each job runs behind a small launcher process, and the captures are
written by a child of their own. Prints one JSON object.

``peak_rss_mib(frames=1_000_000)`` is the figure ``make bench`` reports as
``peak_rss_mib_1m_frames``: the peak RSS of loading a whole dataset of that many frames
(reading, splitting, building, fitting the scaling and reading every prepared graph once).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DIR = Path(tempfile.gettempdir()) / "kdcore-bench-large"
SEGMENT_FRAMES = 1_000_000  # frames generated at a time, so writing a big capture needs little memory


def write_capture(frames: int, folder: Path = DEFAULT_DIR, seed: int = 0) -> Path:
    """A ctt capture of exactly ``frames`` frames of one synthetic vehicle (one recording after
    another, every fourth with DoS bursts), written once and reused."""
    from kdcore.data.formats.ctt import HEADER
    from kdcore.data.formats.writers import write_csv
    from kdcore.data.traffic import TrafficProfile, inject

    path = folder / f"capture-{frames}-seed{seed}.csv"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    profile = TrafficProfile.random(seed)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    segment_file = path.with_name(f".{path.name}.{os.getpid()}.segment")
    try:
        with open(partial, "wb") as out:
            out.write((HEADER + "\n").encode())
            written, start, segment = 0, 0.0, 0
            while written < frames:
                wanted = min(SEGMENT_FRAMES, frames - written)
                table = profile.generate(wanted / profile.frame_rate * 1.02 + 1.0, seed=seed, capture=segment, start=start)
                if segment % 4 == 3:
                    table = inject(table, "dos", seed=segment)
                table = table.take(slice(0, wanted))
                write_csv(table, segment_file)
                with open(segment_file, "rb") as rows:
                    rows.readline()  # the header
                    shutil.copyfileobj(rows, out, 1 << 20)
                written += len(table)
                start = float(table.timestamp[-1]) + 0.001
                segment += 1
        os.replace(partial, path)
    finally:
        for leftover in (partial, segment_file):
            leftover.unlink(missing_ok=True)
    return path


def measure(job: str, capture: Path, stream: bool | None, window: int = 100, stride: int = 100) -> dict:
    """Run one job (``build``: the capture's graphs, as ``kdcore data build``; ``dataset``: a whole
    dataset load) in a fresh process; its figures and peak RSS. ``stream=None``: by size.

    The job runs as the grandchild of this process: Linux hands a process's peak RSS on through
    ``fork``/``exec``, so a child of a big caller (``make bench`` after training) would report
    the caller's peak; a small launcher in between reports the job's own.
    """
    path = {True: "stream", False: "whole", None: "auto"}[stream]
    command = [sys.executable, os.path.abspath(__file__), "--measure", job, str(capture), path, str(window), str(stride)]
    return json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout)


def _launch(arguments: list[str]) -> None:
    """The launcher: run the job as a child and print its figures with its peak RSS (``wait4``)."""
    command = [sys.executable, os.path.abspath(__file__), "--child", *arguments]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with status {child.returncode}")
    print(json.dumps({**json.loads(output), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}))


def peak_rss_mib(frames: int = 1_000_000, stream: bool | None = None, folder: Path = DEFAULT_DIR) -> float:
    """Peak RSS (MiB) of loading a dataset of ``frames`` frames (one synthetic ctt capture split
    into train/validation/test, graphs built, scaling fitted, every graph read once) in a fresh
    process. ``stream=None`` lets kdcore choose by size, as a run would."""
    capture = capture_in_child(frames, folder)
    return measure("dataset", capture, stream)["peak_rss_mib"]


def capture_in_child(frames: int, folder: Path = DEFAULT_DIR) -> Path:
    """``write_capture`` in a child process, so generating it leaves this process small."""
    command = [sys.executable, os.path.abspath(__file__), "--write", str(frames), str(folder)]
    return Path(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout.strip())


def _child(job: str, capture: str, path: str, window: int, stride: int) -> None:
    """Inside the measured process: import, then build into an empty temporary cache."""
    import resource

    from kdcore.config import RunConfig
    from kdcore.data.cache import GraphCache
    from kdcore.data.captures import CaptureDataset, GraphRecipe, should_stream
    from kdcore.data.formats.chunks import CHUNK_BYTES

    import_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stream = should_stream([Path(capture)]) if path == "auto" else path == "stream"
    scratch = Path(tempfile.mkdtemp(prefix="kdcore-bench-cache-"))
    try:
        started = time.perf_counter()
        if job == "build":
            graphs = GraphRecipe(window, stride, stream=stream).graphs(GraphCache(scratch), Path(capture))
            figures = {"frames": graphs.num_frames, "graphs": len(graphs)}
        else:
            os.environ["KDCORE_STREAM_MIB"] = "0" if stream else "1000000"
            config = RunConfig(dataset="captures", data_root=capture, experiment_root=str(scratch), progress_bar=False,
                               window_size=window, window_stride=stride)
            splits = CaptureDataset(config).load_splits()
            sets = [splits.train, splits.val, *splits.tests.values()]
            for graphs in sets:
                for index in range(len(graphs)):
                    graphs[index]
            figures = {"graphs": sum(len(graphs) for graphs in sets)}
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({**figures, "stream": stream, "seconds": round(seconds, 3), "import_rss_mib": round(import_rss, 1), "chunk_mib": CHUNK_BYTES >> 20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,5000000,10000000", help="Comma-separated capture sizes in frames.")
    parser.add_argument("--whole-up-to", type=int, default=5_000_000, help="Measure the whole-file path up to this size.")
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--stride", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="Where the captures are written (not the repository).")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _launch(args.measure)
        return
    if args.child:
        job, capture, path, window, stride = args.child
        _child(job, capture, path, int(window), int(stride))
        return
    if args.write:
        print(write_capture(int(args.write[0]), Path(args.write[1])))
        return

    runs = []
    chunk_mib = None
    for frames in (int(size) for size in args.sizes.split(",")):
        capture = capture_in_child(frames, args.dir)
        for stream in (True, False):
            if not stream and frames > args.whole_up_to:
                continue
            result = measure("build", capture, stream, args.window, args.stride)
            chunk_mib = result["chunk_mib"]
            runs.append({
                "path": "stream" if stream else "whole",
                "frames": result["frames"],
                "file_mib": round(capture.stat().st_size / 2**20, 1),
                "graphs": result["graphs"],
                "seconds": result["seconds"],
                "frames_per_s": round(result["frames"] / result["seconds"]),
                "peak_rss_mib": result["peak_rss_mib"],
                "import_rss_mib": result["import_rss_mib"],
            })
    streamed = [run for run in runs if run["path"] == "stream"]
    print(json.dumps({
        "window": args.window,
        "stride": args.stride,
        "chunk_mib": chunk_mib,
        "runs": runs,
        "stream_peak_rss_mib_by_frames": {run["frames"]: run["peak_rss_mib"] for run in streamed},
        "whole_peak_rss_mib_by_frames": {run["frames"]: run["peak_rss_mib"] for run in runs if run["path"] == "whole"},
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_implementation()} {platform.python_version()}",
        "load_average_1min": round(os.getloadavg()[0], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
