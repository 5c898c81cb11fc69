"""What ``kdcore data inspect`` and ``kdcore data build`` report about captures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from kdcore.data.cache import GraphCache
from kdcore.data.captures import GraphRecipe, by_capture, capture_files, ctt_folders, split_jobs
from kdcore.data.formats import read_capture, resolve_format
from kdcore.data.formats.base import CaptureFormat
from kdcore.data.frames import FrameTable, RowErrors, SharedStamps


def captures_under(path: Path) -> list[Path]:
    """One capture, or every CSV of a ctt dataset folder, or every capture in a folder."""
    layout = ctt_folders(path)
    if layout is not None:
        train, tests = layout
        return train + [f for files in tests.values() for f in files]
    return capture_files(path)


def read_all(path: Path, capture_format: str | CaptureFormat | None, on_bad_rows: str) -> Iterator[tuple[str, FrameTable, RowErrors]]:
    """(format name, frames, what was said of its bad rows) of every capture under ``path``."""
    for file in captures_under(path):
        resolved = resolve_format(file, capture_format)
        errors = RowErrors(file, on_bad_rows)
        yield resolved.name, read_capture(file, resolved, errors=errors), errors


def summarize(tables: list[FrameTable], formats: list[str], first_bad_row: str | None = None) -> dict[str, Any]:
    """Rows (frames) and what they hold. ``time_span_s`` sums each capture's own span (recordings
    do not share a clock) and is None where a capture has no timestamps; so is ``shared_stamps``,
    the share of frames stamped as the one before in their capture (``SharedStamps``: what tells
    a logger that stamps in batches, which ``detect`` warns of where a model's calibration
    recording was stamped otherwise)."""
    table = FrameTable.concat(tables)
    attack_types = np.bincount(table.attack_type, minlength=len(table.attack_names))
    timestamps = table.timestamps
    span = sum(float(t.timestamp.max() - t.timestamp.min()) for t in tables if len(t)) if timestamps else None
    stamps = SharedStamps()
    for capture in tables:
        stamps.add(capture, follows=False)
    extended = table.extended
    return {
        "format": formats[0] if len(set(formats)) == 1 else sorted(set(formats)),
        "files": len(tables),
        "rows": len(table),
        "attack_rows": table.attack_rows,
        "normal_rows": len(table) - table.attack_rows,
        "attack_rows_by_type": {
            name: int(count) for name, count in zip(table.attack_names[1:], attack_types[1:]) if count
        },
        "distinct_ids": int(len(np.unique(table.can_id))),
        "standard_id_rows": int(len(table) - extended.sum()),
        "extended_id_rows": int(extended.sum()),
        "distinct_standard_ids": int(len(np.unique(table.can_id[~extended]))),
        "distinct_extended_ids": int(len(np.unique(table.can_id[extended]))),
        "remote_frames": int(table.remote.sum()),
        "error_frames": table.error_frames,
        "timestamps": timestamps,
        "time_span_s": None if span is None else round(span, 6),
        "shared_stamps": stamps.rounded if timestamps else None,
        "bad_rows": table.bad_rows,
        "first_bad_row": first_bad_row,
    }


def inspect_path(path: Path, capture_format: str | CaptureFormat | None = None, on_bad_rows: str = "skip") -> dict[str, Any]:
    """The summary of every capture under ``path``; bad rows are counted, and the first one
    quoted (``on_bad_rows="error"`` stops there instead)."""
    found = list(read_all(path, capture_format, on_bad_rows))
    first_bad_row = next((errors.first for *_, errors in found if errors.first), None)
    return summarize([table for _, table, _ in found], [name for name, *_ in found], first_bad_row)


def build_path(path: Path, recipe: GraphRecipe, cache: GraphCache, progress, val_fraction: float = 0.15,
               test_fraction: float = 0.15, train_stride: int | None = None) -> dict[str, Any]:
    """Build (or read from the cache) the graphs of every capture under ``path``, cut into the
    same parts a run over it with these fractions reads, so the run finds them in the cache; the
    training parts' windows ``train_stride`` frames apart (None: the recipe's stride)."""
    started = time.perf_counter()
    jobs = split_jobs(path, val_fraction, test_fraction)
    training = attrs.evolve(recipe, window_stride=train_stride or recipe.window_stride)
    built = [(training if split == "train" else recipe).graphs(cache, file, start, stop)
             for file, split, start, stop in progress(by_capture(jobs))]
    seconds = time.perf_counter() - started
    frames = sum(graphs.num_frames for graphs in built)
    return {
        "files": len({file for file, *_ in jobs}),
        "parts": len(built),
        "frames": frames,
        "graphs": sum(len(graphs) for graphs in built),
        "attack_graphs": int(sum(graphs.y.sum() for graphs in built)),
        "seconds": round(seconds, 4),
        "frames_per_s": round(frames / seconds) if seconds else None,
        "cache_hits": cache.hits,
        "cache_dir": str(cache.cache_dir),
    }
