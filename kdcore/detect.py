"""``kdcore detect``: score CAN traffic window by window as it arrives, and raise alerts.

Frames come from a replayed capture (any readable format, at recorded speed or as fast as
possible) or from a live python-can bus. They are cut into windows and turned into graphs by
``build_window_graphs`` — the code that built the training data — preprocessed with the
vocabulary and scaling saved in the model's checkpoint, and scored by the model's own mode. A
window whose score reaches the saved threshold is an alert, written as one JSON line.

Chunk sources yield ``(frames, arrived)``: ``arrived`` is the ``time.perf_counter()`` at which the
last of the frames arrived (read from the bus, or due in a recorded-speed replay), so a window's
decision latency runs from its last frame's arrival to its decision, waiting included.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs
import numpy as np
import torch
from torch_geometric.data import Batch

from kdcore.checkpoint import load_checkpoint
from kdcore.data.frames import FrameTable
from kdcore.data.graphs import GraphSet
from kdcore.data.preprocess import Preprocessing
from kdcore.data.windows import build_window_graphs
from kdcore.errors import KdcoreError
from kdcore.signals import Stopped
from kdcore.threads import torch_threads

CHUNK_WINDOWS = 16  # windows scored together in an as-fast-as-possible replay (throughput over latency)

FEED_TICK = 0.002  # seconds: how often a recorded-speed feed wakes up at most

Chunk = tuple[FrameTable, float]  # frames, and the perf_counter time the last of them arrived


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

    def detect(self, chunks: Iterable[Chunk], alerts: IO[str] | None = None, on_window=None) -> Summary:
        """Score every full window of the frames in ``chunks`` (non-overlapping windows) as soon as
        it is complete; ``on_window(summary, alert)`` after each decision."""
        summary = Summary()
        started = time.perf_counter()
        pending = FrameTable.empty()
        # One thread: a window is tens of nodes, and intra-op threads would only add hand-offs —
        # on a busy machine a wait for a descheduled thread in every op, after every idle pause.
        with torch_threads(1):
            try:
                for chunk, arrived in chunks:
                    pending = FrameTable.concat([pending, chunk]) if len(pending) else chunk
                    summary.frames += len(chunk)
                    full = len(pending) // self.window * self.window
                    if full:
                        self._score(pending.take(slice(0, full)), arrived, summary, alerts, on_window)
                        pending = pending.take(slice(full, None))
            except (KeyboardInterrupt, Stopped):
                pass  # Ctrl-C or SIGTERM (a service being stopped) ends detection cleanly; the summary still comes
        summary.seconds = time.perf_counter() - started
        return summary

    def _score(self, frames: FrameTable, arrived: float, summary: Summary, alerts, on_window) -> None:
        graphs = build_window_graphs(frames, self.window, self.window)
        prepared = self.preprocessing.apply(graphs)
        with torch.inference_mode():
            scores = self.score([window_batch(prepared)])
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
                    alerts.flush()  # alerts are for watching live
            if on_window is not None:
                on_window(summary, alert)


def window_batch(prepared: GraphSet) -> Batch:
    """All windows of ``prepared`` as one PyG batch, made straight from its flat arrays: what
    collating one ``Data`` per window gives, at a fraction of the cost for small windows."""
    node_ptr = torch.tensor(prepared.node_ptr)
    edge_offset = torch.repeat_interleave(node_ptr[:-1], torch.tensor(prepared.edge_ptr).diff())
    graph_of_node = torch.repeat_interleave(torch.arange(len(node_ptr) - 1), node_ptr.diff())
    return Batch(x=prepared.x, id_token=prepared.id_token, edge_index=prepared.edge_index + edge_offset,
                 batch=graph_of_node, ptr=node_ptr)


def replay_chunks(table: FrameTable, window: int, real_time: bool) -> Iterator[Chunk]:
    """A capture's frames in time order: one window at a time, each when its last frame is due at
    recorded speed; or, as fast as possible, ``CHUNK_WINDOWS`` windows at a time."""
    step = window if real_time else window * CHUNK_WINDOWS
    table = table.take(np.argsort(table.timestamp, kind="stable"))
    start_wall = time.perf_counter()
    start_time = table.timestamp[0] if len(table) else 0.0
    for begin in range(0, len(table), step):
        chunk = table.take(slice(begin, begin + step))
        if not real_time:
            yield chunk, time.perf_counter()
            continue
        due = start_wall + (chunk.timestamp[-1] - start_time)
        time.sleep(max(0.0, due - time.perf_counter()))
        yield chunk, due  # a late replay (detection slower than the bus) counts as waiting


def bus_chunks(
    bus, window: int, timeout: float = 1.0, idle_limit: float | None = None, ended: threading.Event | None = None
) -> Iterator[Chunk]:
    """Frames from a python-can bus, one window's worth at a time as they arrive. Stops after
    ``idle_limit`` seconds without a frame (None: never), or at the first wait for a frame once
    ``ended`` is set (a feed that has sent its last frame)."""
    rows: list[tuple] = []
    idle = 0.0
    while True:
        message = bus.recv(timeout)
        if message is None:
            if ended is not None and ended.is_set():
                break
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
            yield _table(rows), time.perf_counter()
            rows = []
    if rows:
        yield _table(rows), time.perf_counter()


def feed_bus(bus, table: FrameTable, real_time: bool, stop: threading.Event) -> None:
    """Send a capture's frames onto ``bus`` in time order, each at its recorded time after the first
    (or as fast as possible), until done or ``stop`` is set. The frames keep their recorded
    timestamps where the bus preserves them (python-can's ``virtual``: ``preserve_timestamps``)."""
    import can

    table = table.take(np.argsort(table.timestamp, kind="stable"))
    start_wall = time.perf_counter()
    start_time = table.timestamp[0] if len(table) else 0.0
    for timestamp, can_id, dlc, payload in zip(table.timestamp.tolist(), table.can_id.tolist(), table.dlc.tolist(), table.payload):
        if real_time:
            wait = start_wall + (timestamp - start_time) - time.perf_counter()
            # Waking at most every FEED_TICK (frames due meanwhile go together) leaves the detector
            # the interpreter for longer stretches: a wake-up per frame slows its decisions.
            if wait > 0 and stop.wait(max(wait, FEED_TICK)):
                return
        elif stop.is_set():
            return
        bus.send(can.Message(timestamp=timestamp, arbitration_id=can_id, is_extended_id=can_id > 0x7FF,
                             dlc=dlc, data=bytes(payload[:dlc])))


def _table(rows: list[tuple]) -> FrameTable:
    timestamp, can_id, dlc, data = zip(*rows)
    payload = np.frombuffer(b"".join(data), dtype=np.uint8).reshape(-1, 8)
    return FrameTable.from_frames(np.array(timestamp), np.array(can_id), np.array(dlc), payload)
