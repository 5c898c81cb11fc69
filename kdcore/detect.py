"""``kdcore detect``: score CAN traffic window by window as it arrives, and raise alerts.

Frames come from a replayed capture (any readable format, at recorded speed or as fast as
possible) or from a live python-can bus. They are cut into windows and turned into graphs by
``build_window_graphs`` — the code that built the training data — preprocessed with the
vocabulary and scaling saved in the model's checkpoint, and scored by the model's own mode. A
window whose score reaches the saved threshold is an alert, written as one JSON line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs
import numpy as np
import torch
from torch_geometric.loader import DataLoader

from kdcore.checkpoint import load_checkpoint
from kdcore.data.frames import FrameTable
from kdcore.data.preprocess import Preprocessing
from kdcore.data.windows import build_window_graphs
from kdcore.errors import KdcoreError

CHUNK_WINDOWS = 16  # windows scored together when frames arrive faster than one window at a time


@attrs.define
class Summary:
    frames: int = 0
    windows: int = 0
    alerts: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = attrs.field(factory=list)

    def as_dict(self) -> dict[str, Any]:
        latencies = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "frames": self.frames,
            "windows": self.windows,
            "alerts": self.alerts,
            "seconds": round(self.seconds, 3),
            "frames_per_s": round(self.frames / self.seconds) if self.seconds else None,
            "latency_ms_p50": round(float(np.percentile(latencies, 50)), 3),
            "latency_ms_p99": round(float(np.percentile(latencies, 99)), 3),
        }


class Detector:
    """A trained GAT, VGAE or fused detector with what it needs to score raw frames: window size,
    vocabulary, feature scaling, threshold, and its mode's scoring function."""

    def __init__(self, checkpoint_path: str | Path, engine=None):
        from kdcore.engine import Engine
        from kdcore.plugins.modes.autoencoder import AutoencoderMode
        from kdcore.plugins.modes.fusion import FusionPredictor
        from kdcore.plugins.modes.normal import NormalMode

        engine = engine or Engine()
        checkpoint = load_checkpoint(checkpoint_path)
        data = checkpoint.extra.get("data", {})
        if checkpoint.model not in ("gat", "vgae", "dqn") or "preprocessing" not in data:
            raise KdcoreError(f"{checkpoint_path}: detect needs a GAT, VGAE or fusion checkpoint trained by kdcore on captures")
        self.window = int(data["window_size"])
        self.preprocessing = Preprocessing.from_dict(data["preprocessing"])
        self.threshold = float(checkpoint.extra["threshold"])
        if checkpoint.model == "dqn":
            predictor, _ = FusionPredictor.from_checkpoint(engine, checkpoint_path)
            self.score: Callable = predictor.scores
            return
        model = engine.load_model(checkpoint, checkpoint_path)
        if checkpoint.model == "gat":
            self.score = lambda loader: NormalMode().attack_probabilities(model, loader)
        else:
            self.score = lambda loader: AutoencoderMode().window_scores(model, loader)

    def detect(self, chunks: Iterator[FrameTable], alerts: IO[str] | None = None, on_window=None) -> Summary:
        """Score every full window of the frames in ``chunks`` (non-overlapping windows)."""
        summary = Summary()
        started = time.perf_counter()
        pending = FrameTable.empty()
        try:
            for chunk in chunks:
                arrived = time.perf_counter()
                pending = FrameTable.concat([pending, chunk]) if len(pending) else chunk
                summary.frames += len(chunk)
                full = len(pending) // self.window * self.window
                if full:
                    self._score(pending.take(slice(0, full)), arrived, summary, alerts, on_window)
                    pending = pending.take(slice(full, None))
        except KeyboardInterrupt:
            pass  # Ctrl-C ends detection cleanly; the summary still comes
        summary.seconds = time.perf_counter() - started
        return summary

    def _score(self, frames: FrameTable, arrived: float, summary: Summary, alerts, on_window) -> None:
        graphs = build_window_graphs(frames, self.window, self.window)
        prepared = self.preprocessing.apply(graphs)
        with torch.no_grad():
            scores = self.score(DataLoader(prepared, batch_size=len(prepared)))
        decided = time.perf_counter()
        for index, score in enumerate(scores.tolist()):
            alert = score >= self.threshold
            summary.windows += 1
            summary.latencies_ms.append((decided - arrived) * 1000)
            if alert:
                summary.alerts += 1
                if alerts is not None:
                    rows = slice(graphs.node_ptr[index], graphs.node_ptr[index + 1])
                    record = {
                        "start": float(graphs.time_span[index, 0]),
                        "end": float(graphs.time_span[index, 1]),
                        "can_ids": [f"{int(i):03X}" for i in graphs.can_id[rows]],
                        "score": round(score, 6),
                        "threshold": round(self.threshold, 6),
                        "decision": "attack",
                    }
                    alerts.write(json.dumps(record) + "\n")
            if on_window is not None:
                on_window(summary, alert)


def replay_chunks(table: FrameTable, window: int, real_time: bool) -> Iterator[FrameTable]:
    """A capture's frames in arrival order: one window at a time at recorded speed, or in chunks of
    several windows as fast as possible."""
    step = window if real_time else window * CHUNK_WINDOWS
    order = np.argsort(table.timestamp, kind="stable")
    table = table.take(order)
    start_wall = time.perf_counter()
    start_time = table.timestamp[0] if len(table) else 0.0
    for begin in range(0, len(table), step):
        chunk = table.take(slice(begin, begin + step))
        if real_time:
            due = start_wall + (chunk.timestamp[-1] - start_time)
            time.sleep(max(0.0, due - time.perf_counter()))
        yield chunk


def bus_chunks(bus, window: int, timeout: float = 1.0, idle_limit: float | None = None) -> Iterator[FrameTable]:
    """Frames from a python-can bus, one window's worth at a time; stops after ``idle_limit``
    seconds without a frame (None: never)."""
    rows: list[tuple] = []
    idle = 0.0
    while True:
        message = bus.recv(timeout)
        if message is None:
            idle += timeout
            if idle_limit is not None and idle >= idle_limit:
                break
            continue
        idle = 0.0
        if message.is_error_frame or message.is_remote_frame:
            continue
        data = bytes(message.data[:8]).ljust(8, b"\0")
        rows.append((message.timestamp, message.arbitration_id, min(message.dlc, 8), data))
        if len(rows) == window:
            yield _table(rows)
            rows = []
    if rows:
        yield _table(rows)


def _table(rows: list[tuple]) -> FrameTable:
    timestamp, can_id, dlc, data = zip(*rows)
    payload = np.frombuffer(b"".join(data), dtype=np.uint8).reshape(-1, 8)
    return FrameTable.from_frames(np.array(timestamp), np.array(can_id), np.array(dlc), payload)
