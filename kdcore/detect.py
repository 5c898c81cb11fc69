"""``kdcore detect``: score CAN traffic window by window as it arrives, and raise alerts.

Frames come from a replayed capture (any readable format, at recorded speed or as fast as
possible) or from a live python-can bus. They are cut into windows and turned into graphs by
``build_window_graphs`` — the code that built the training data — preprocessed with the
vocabulary and scaling saved in the model's checkpoint, and scored by the model's own mode. A
window whose score reaches the saved threshold is an alert, written as one JSON line.

A window scored on its own (on a bus, or at recorded speed) goes through the GAT's or VGAE's
one-window scorer traced to TorchScript when the model loads: for these small models PyG's
per-layer Python overhead is most of the scoring time, and the trace skips it. The trace is used
only if it scores sample windows of several sizes as the eager scorer does; otherwise, and for
the fused detector, scoring stays eager.

Chunk sources yield ``(frames, arrived)``: ``arrived`` is the ``time.perf_counter()`` at which the
last of the frames arrived (read from the bus, or due in a recorded-speed replay), so a window's
decision latency runs from its last frame's arrival to its decision, waiting included.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs
import numpy as np
import torch
from torch_geometric.data import Batch

from kdcore.checkpoint import load_checkpoint
from kdcore.data.frames import FrameTable
from kdcore.data.graphset import GraphSet
from kdcore.data.preprocess import Preprocessing
from kdcore.data.windows import build_window_graphs, node_keys
from kdcore.errors import KdcoreError
from kdcore.export import TOLERANCE, OneWindow, sample_windows
from kdcore.signals import Stopped
from kdcore.threads import torch_threads

NODE_FIELDS = {"can_id": "can_ids", "j1939_source": "j1939_sources", "j1939_pgn": "j1939_pgns"}  # an alert's node list, named
CHUNK_WINDOWS = 16  # windows scored together in an as-fast-as-possible replay (throughput over latency)

FEED_TICK = 0.002  # seconds: how often a recorded-speed feed wakes up at most

Chunk = tuple[FrameTable, float]  # frames, and the perf_counter time the last of them arrived

log = logging.getLogger(__name__)


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
        from kdcore.fusion import FusionPredictor

        engine = engine or Engine()
        checkpoint = load_checkpoint(checkpoint_path)
        data = checkpoint.extra.get("data", {})
        if checkpoint.model not in ("gat", "vgae", "dqn") or "preprocessing" not in data:
            raise KdcoreError(f"{checkpoint_path}: not a GAT, VGAE or fusion checkpoint trained by kdcore on captures")
        self.config = checkpoint.config  # the run that trained it
        self.data = data  # what the model was trained on: window settings, graph nodes, vocabulary and scaling
        self.window = int(data["window_size"])
        self.graph_node = data.get("graph_node", "can_id")
        self.preprocessing = Preprocessing.from_dict(data["preprocessing"])
        self.threshold = float(checkpoint.extra["threshold"])
        self.score_window: Callable | None = None  # (x, id_token, edge_index) → score: the traced scorer, if any
        if checkpoint.model == "dqn":
            predictor, _ = FusionPredictor.from_checkpoint(engine, checkpoint_path)
            self.score: Callable = predictor.scores
            return
        model = engine.load_model(checkpoint, checkpoint_path)
        self.score = model_scorer(model, checkpoint.model)
        self.score_window = self._traced(WindowScore(model), sample_windows(checkpoint))

    def _traced(self, scorer: WindowScore, windows: list[tuple[torch.Tensor, ...]]) -> Callable | None:
        """``scorer`` traced to TorchScript on the first window, if on every window its score is
        the eager scorer's within the export tolerance; else None (eager scoring), with a warning.

        A trace records one path through the Python branches of PyG's layers; comparing on windows
        of other sizes is what shows that path holds for them too.
        """
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.filterwarnings("ignore", message=r".*torch\.jit", category=DeprecationWarning)
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the check below decides
                traced = torch.jit.trace(scorer, windows[0], check_trace=False)
                difference = max(
                    float((traced(*window) - self.score([one_window_batch(*window)])).abs().max()) for window in windows
                )
        except Exception as error:  # whatever breaks the trace, eager scoring still works
            why = str(error).partition("\n")[0]  # one line: torch's messages can run on for pages
            log.warning("scoring windows eagerly: tracing the scorer failed (%s: %s)", type(error).__name__, why)
            return None
        if not difference <= TOLERANCE:
            log.warning("scoring windows eagerly: the traced scorer differs from the eager one by %.3g (tolerance %g)",
                        difference, TOLERANCE)
            return None
        return traced

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
                        ready = pending if full == len(pending) else pending.take(slice(0, full))  # live: the whole chunk
                        self._score(ready, arrived, summary, alerts, on_window)
                        pending = pending.take(slice(full, None))
            except (KeyboardInterrupt, Stopped):
                pass  # Ctrl-C or SIGTERM (a service being stopped) ends detection cleanly; the summary still comes
        summary.seconds = time.perf_counter() - started
        return summary

    def _score(self, frames: FrameTable, arrived: float, summary: Summary, alerts, on_window) -> None:
        graphs = build_window_graphs(node_keys(frames, self.graph_node), self.window, self.window)
        with torch.inference_mode():
            if len(graphs) == 1:  # as ``apply`` prepares it, without a dataset around one window
                x, id_token = self.preprocessing.prepare(graphs.x, graphs.can_id)
                edge_index = torch.from_numpy(graphs.edge_index.astype(np.int64))
                scores = self._score_one(torch.from_numpy(x), torch.from_numpy(id_token), edge_index)
            else:  # a chunk: one batched eager call is faster than the traced scorer window by window
                scores = self.score([window_batch(self.preprocessing.apply(graphs))])
        decided = time.perf_counter()
        for index, score in enumerate(scores.tolist()):
            alert = score >= self.threshold
            summary.windows += 1
            summary.latencies_ms.append((decided - arrived) * 1000)
            if alert:
                summary.alerts += 1
                if alerts is not None:
                    rows = slice(graphs.node_ptr[index], graphs.node_ptr[index + 1])
                    first, last = graphs.time_span[index].tolist()
                    record = {  # without timestamps, start and end are the frames' positions in the capture
                        "start": first if graphs.timestamps else int(first),
                        "end": last if graphs.timestamps else int(last),
                        "unit": "s" if graphs.timestamps else "frame",
                        NODE_FIELDS[self.graph_node]: [f"{int(i):03X}" for i in graphs.can_id[rows]],
                        "score": round(score, 6),
                        "threshold": round(self.threshold, 6),
                        "decision": "attack",
                    }
                    alerts.write(json.dumps(record) + "\n")
                    alerts.flush()  # alerts are for watching live
            if on_window is not None:
                on_window(summary, alert)

    def _score_one(self, x: torch.Tensor, id_token: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """One window through the traced scorer if there is one. A traced score within the
        tolerance of the threshold is computed again eagerly: no decision rests on a difference
        the parity check allows."""
        if self.score_window is not None:
            score = self.score_window(x, id_token, edge_index)
            if abs(float(score) - self.threshold) > TOLERANCE:
                return score
        return self.score([one_window_batch(x, id_token, edge_index)])


def model_scorer(model, name: str) -> Callable:
    """``loader → one score per window`` of a GAT (P(attack)) or VGAE (reconstruction error), by its mode's own code."""
    from kdcore.plugins.modes.autoencoder import AutoencoderMode
    from kdcore.plugins.modes.normal import NormalMode

    if name == "gat":
        return lambda loader: NormalMode().attack_probabilities(model, loader)
    return lambda loader: AutoencoderMode().window_scores(model, loader)


class WindowScore(OneWindow):
    """The export wrapper's outputs turned into the mode's window score (GAT: P(attack); VGAE:
    reconstruction error), so the whole one-window scorer traces as one TorchScript graph."""

    def forward(self, x: torch.Tensor, id_token: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        from kdcore.plugins.modes.autoencoder import graph_scores

        outputs = super().forward(x, id_token, edge_index)
        if not self.vgae:
            return torch.softmax(outputs[0].float(), -1)[:, 1]
        recon, canid_logits, neighbor_logits, _ = outputs
        named = {"recon": recon, "canid_logits": canid_logits, "neighbor_logits": neighbor_logits}
        return graph_scores(named, x, id_token, torch.zeros_like(id_token), 1)


def one_window_batch(x: torch.Tensor, id_token: torch.Tensor, edge_index: torch.Tensor) -> Batch:
    """One window's tensors as a PyG batch of one graph, for the eager scorers."""
    return Batch(x=x, id_token=id_token, edge_index=edge_index, batch=torch.zeros_like(id_token),
                 ptr=torch.tensor([0, len(x)]))


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
    recorded speed; or, as fast as possible, ``CHUNK_WINDOWS`` windows at a time. A capture without
    timestamps has no recorded speed: it replays as fast as possible."""
    real_time = real_time and table.timestamps
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

    real_time = real_time and table.timestamps  # positions are no clock: as fast as possible
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
