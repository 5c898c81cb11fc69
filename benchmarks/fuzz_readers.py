"""Fuzz every capture reader for a while: mutated captures of every format, read in both modes.

    python benchmarks/fuzz_readers.py [--seconds 120 | --iterations N] [--seed 0] [--real DIR] [--out DIR]

A case is a sample capture mutated 1-4 times (or, one case in ten, random bytes behind a
format's header), written to a temporary file and read three ways, each in both ``on_bad_rows``
modes: with its own format named, with the format detected, and with a random other format
named. Samples are small captures of every format rendered from random frames and, when the
shared real captures are present (``--real``, default ``../shared/data/real``), the first 8 KiB
of each of them (read from there, never copied into the repository). The renderers, mutations
and the property checked are those of ``tests/test_fuzz_readers.py``.

Each check (one reader, both modes) ends in one of: ``parsed`` (a consistent table), ``error``
(a one-line ``KdcoreError`` naming the file), or ``bug`` (any other exception, a hang past 60 s,
an inconsistent table, a malformed message, or skip mode disagreeing with error mode). Prints one
JSON summary (checks per reader and outcome, cases per sample format, the slowest check, peak
RSS next to the RSS after imports) and exits 1 when there was a bug; each bug's input is saved
in ``--out`` (default: a new temporary folder) with its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_fuzz_readers as fuzz  # noqa: E402

from kdcore.data.formats import detect_format  # noqa: E402
from kdcore.data.frames import FrameTable  # noqa: E402
from kdcore.errors import KdcoreError  # noqa: E402

REAL_HEAD_BYTES = 8192


def rendered_samples(rng: random.Random) -> list[tuple[str, str, bytes]]:
    """(sample name, format, bytes): each format's renderer on a few random frames."""
    samples = []
    for variant, (name, render, *_) in fuzz.VARIANTS.items():
        for k in range(3):
            steps = [
                (rng.randrange(3_000_000), rng.choice([rng.randrange(0x800), rng.randrange(0x800, fuzz.MAX_ID + 1)]),
                 rng.randbytes(rng.randrange(9)), rng.randrange(2))
                for _ in range(rng.randrange(1, 12))
            ]
            samples.append((f"{variant}-{k}", name, render(fuzz.frames_from(steps))))
    return samples


def real_samples(folder: Path) -> list[tuple[str, str, bytes]]:
    """(sample name, format, bytes): the first whole lines of every real capture under ``folder``."""
    samples = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".log", ".trc", ".csv", ".asc", ".txt")):
        with path.open("rb") as handle:
            head = handle.read(REAL_HEAD_BYTES)
        head = head[: head.rfind(b"\n") + 1] or head
        try:
            name = detect_format(path).name
        except KdcoreError:
            name = "none"  # not a capture (civic8th/test.log): still a fine input for detection
        samples.append((f"real:{path.relative_to(folder)}", name, head))
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="run this long (ignored with --iterations)")
    parser.add_argument("--iterations", type=int, default=None, help="run this many cases (deterministic for a seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "data" / "real", help="real captures to use as samples, when present")
    parser.add_argument("--out", type=Path, default=None, help="where to save the inputs of bugs (default: a new temporary folder)")
    args = parser.parse_args()

    logging.getLogger("can").setLevel(logging.CRITICAL)  # python-can warns per odd object or row: millions, in a bad case
    rng = random.Random(args.seed)
    samples = rendered_samples(rng) + (real_samples(args.real) if args.real.is_dir() else [])
    by_format = defaultdict(list)
    for sample in samples:
        by_format[sample[1]].append(sample)
    work = tempfile.TemporaryDirectory(prefix="kdcore-fuzz-")
    out = args.out
    rss_at_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    checks: dict[str, Counter] = defaultdict(Counter)
    cases: Counter = Counter()
    bugs: list[dict] = []
    slowest = {"seconds": 0.0}
    started = time.perf_counter()
    case = 0
    while (case < args.iterations) if args.iterations is not None else (time.perf_counter() - started < args.seconds):
        case += 1
        if rng.random() < 0.1:
            sample, name = "random-bytes", "none"
            data = rng.choice(fuzz.PREFIXES) + rng.randbytes(rng.randrange(1000))
            mutations = []
        else:
            sample, name, data = rng.choice(by_format[rng.choice(list(by_format))])  # every format as often
            data, mutations = fuzz.mutate(data, rng.randrange, rng.randint(1, 4))
        cases[name] += 1
        path = Path(work.name) / f"case{Path(sample).suffix}"
        path.write_bytes(data)
        other = rng.choice(fuzz.FORMAT_NAMES)
        for reader in dict.fromkeys([name if name != "none" else other, "detect", other]):
            began = time.perf_counter()
            try:
                result = fuzz.check_capture(path, None if reader == "detect" else reader)
                outcome = "parsed" if isinstance(result, FrameTable) else "error"
            except Exception as exc:  # noqa: BLE001 — a bug of any kind is what we look for
                outcome = "bug"
                out = out or Path(tempfile.mkdtemp(prefix="kdcore-fuzz-bugs-"))
                saved = out / f"bug{len(bugs)}"
                saved.mkdir(parents=True, exist_ok=True)
                (saved / "input").write_bytes(data)
                (saved / "traceback.txt").write_text("".join(traceback.format_exception(exc)))
                bugs.append({"case": case, "sample": sample, "reader": reader, "mutations": mutations,
                             "exception": f"{type(exc).__name__}: {str(exc)[:300]}", "saved": str(saved)})
            seconds = time.perf_counter() - began
            checks[reader][outcome] += 1
            if seconds > slowest["seconds"]:
                slowest = {"seconds": round(seconds, 4), "sample": sample, "reader": reader, "mutations": mutations, "bytes": len(data)}

    summary = {
        "seed": args.seed,
        "cases": case,
        "seconds": round(time.perf_counter() - started, 1),
        "samples": {"rendered": sum(1 for s in samples if not s[0].startswith("real:")), "real": sum(1 for s in samples if s[0].startswith("real:"))},
        "cases_per_sample_format": dict(sorted(cases.items())),
        "checks_per_reader": {reader: dict(sorted(counts.items())) for reader, counts in sorted(checks.items())},
        "totals": dict(sum(checks.values(), Counter())),
        "slowest_check": slowest,
        "rss_after_imports_mb": round(rss_at_start / 1024, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "bugs": bugs[:20],
        "bug_count": len(bugs),
    }
    work.cleanup()
    print(json.dumps(summary, indent=2))
    return 1 if bugs else 0


if __name__ == "__main__":
    sys.exit(main())
