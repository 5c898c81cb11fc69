"""``kdcore detect``: score CAN traffic window by window as it arrives, and raise alerts.

Frames come from a replayed capture (any readable format, at recorded speed or as fast as
possible) or from a live python-can bus (``kdcore.bus``). They are cut into windows and turned
into graphs by ``build_window_graphs`` — the code that built the training data — preprocessed
with the vocabulary and scaling saved in the model's checkpoint, and scored by the model's own
mode. A window whose score reaches the saved threshold alerts; alerting windows name their
suspect CAN IDs and attack class, and merge into incidents (``kdcore.incidents``), each written as
a JSON line when it opens and when it closes.

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
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs
import numpy as np
import torch
from torch_geometric.data import Batch

from kdcore.bus import Chunk
from kdcore.checkpoint import load_checkpoint
from kdcore.classes import AttackClasses
from kdcore.data.frames import FrameTable, SharedStamps
from kdcore.data.graphs import WindowGraphs
from kdcore.data.graphset import GraphSet
from kdcore.data.preprocess import Preprocessing
from kdcore.data.windows import build_window_graphs, node_keys
from kdcore.errors import KdcoreError
from kdcore.export import TOLERANCE, OneWindow, sample_windows
from kdcore.incidents import IncidentTracker, WindowVerdict, suspects
from kdcore.metrics import AlertJudge, ScoreSpread, log_odds
from kdcore.plugins.modes.autoencoder import AutoencoderMode, check_score
from kdcore.plugins.modes.normal import NormalMode
from kdcore.signals import Stopped
from kdcore.threads import torch_threads

NODE_FIELDS = {"can_id": "can_ids", "j1939_source": "j1939_sources", "j1939_pgn": "j1939_pgns"}  # an alert's node list, named
CHUNK_WINDOWS = 16  # windows scored together in an as-fast-as-possible replay (throughput over latency)
LATENCY_WINDOWS = 100_000  # latency percentiles are over the last this many windows
STAMP_PAIRS = 1000  # frames counted before their timestamps are compared with the calibration recording's
STAMP_MARGIN = 0.05  # a share of frames stamped as the one before this far from the recording's: another logger


log = logging.getLogger(__name__)


@attrs.define
class Summary:
    frames: int = 0
    windows: int = 0
    alert_windows: int = 0
    incidents: int = 0
    seconds: float = 0.0
    # the decision latencies of the last LATENCY_WINDOWS windows: a detector that runs for days keeps its memory flat
    latencies_ms: deque[float] = attrs.field(factory=lambda: deque(maxlen=LATENCY_WINDOWS))

    def as_dict(self) -> dict[str, Any]:
        latencies = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "frames": self.frames,
            "windows": self.windows,
            "incidents": self.incidents,
            "alert_windows": self.alert_windows,
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
        check_score(checkpoint, checkpoint_path)
        self.config = checkpoint.config  # the run that trained it
        self.data = data  # what the model was trained on: window settings, graph nodes, vocabulary and scaling
        self.window = int(data["window_size"])
        self.graph_node = data.get("graph_node", "can_id")
        self.preprocessing = Preprocessing.from_dict(data["preprocessing"])
        self.path = Path(checkpoint_path)
        self.warn_of_another_vehicle = self.preprocessing.recorded_ids is None  # calibrated: its recording was the vehicle's
        # the calibration recording's share of frames stamped as the one before (None: not calibrated, or before it was kept)
        self.recorded_stamps = checkpoint.extra.get("calibration", {}).get("shared_stamps")
        self.warn_of_another_logger = self.recorded_stamps is not None
        self.threshold = float(checkpoint.extra["threshold"])
        self.spread = ScoreSpread.saved_in(checkpoint.extra)  # alerts' margins; None for a model saved before spreads
        self.score_window: Callable | None = None  # (x, id_token, edge_index) → score: the traced scorer, if any
        if checkpoint.model == "dqn":
            predictor, _ = FusionPredictor.from_checkpoint(engine, checkpoint_path)
            self.score: Callable = predictor.scores
            self.judge = predictor.alert_judge(load_checkpoint(checkpoint.extra["fusion"]["gat"]["path"]).extra,
                                               self.preprocessing.vehicle_ids)
            return
        model = engine.load_model(checkpoint, checkpoint_path)
        mode = scoring_mode(checkpoint.model)
        self.score = model_scorer(model, checkpoint.model)
        self.judge = AlertJudge(lambda batch: mode.node_scores(model, batch), AttackClasses.saved_in(checkpoint.extra, mode.window_embedding),
                                model_embedder(model, checkpoint.model), self.preprocessing.vehicle_ids)
        # where the traced and the eager score are compared: a GAT's probabilities in log-odds, so
        # that a threshold near 0 or 1 (a sure classifier's) is not within the tolerance of every window
        self._decision_units = log_odds if checkpoint.model == "gat" else _float64
        self.score_window = self._traced(WindowScore(model), sample_windows(checkpoint))

    def _traced(self, scorer: WindowScore, windows: list[tuple[torch.Tensor, ...]]) -> Callable | None:
        """``scorer`` traced to TorchScript on the first window, if on every window its score is
        the eager scorer's within the export tolerance (in log-odds for a GAT); else None (eager
        scoring), with a warning.

        A trace records one path through the Python branches of PyG's layers; comparing on windows
        of other sizes is what shows that path holds for them too.
        """
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.filterwarnings("ignore", message=r".*torch\.jit", category=DeprecationWarning)
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the check below decides
                traced = torch.jit.trace(scorer, windows[0], check_trace=False)
                units = self._decision_units
                difference = max(
                    float((units(traced(*window)) - units(self.score([one_window_batch(*window)]))).abs().max()) for window in windows
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

    def detect(self, chunks: Iterable[Chunk], alerts: IO[str] | None = None, on_window=None, verbose: bool = False,
               tracker: IncidentTracker | None = None, source: str = "the traffic") -> Summary:
        """Score every full window of the frames in ``chunks`` (non-overlapping windows) as soon as
        it is complete, and write to ``alerts`` a JSON line when an incident opens and one when it
        closes (``tracker`` merges alerting windows into incidents), and with ``verbose`` one per
        alerting window; ``on_window(summary, alert)`` after each decision; ``source``: where the
        frames come from, as a warning names it."""
        summary = Summary()
        tracker = tracker or IncidentTracker()
        started = time.perf_counter()
        pending, stamps = FrameTable.empty(), SharedStamps()
        stream = _Stream(alerts, verbose, tracker, summary, NODE_FIELDS[self.graph_node], self.threshold)
        # One thread: a window is tens of nodes, and intra-op threads would only add hand-offs —
        # on a busy machine a wait for a descheduled thread in every op, after every idle pause.
        with torch_threads(1):
            try:
                for chunk, arrived in chunks:
                    pending = FrameTable.concat([pending, chunk]) if len(pending) else chunk
                    summary.frames += len(chunk)
                    if self.warn_of_another_logger:  # until it has warned: nothing to count after
                        self.check_stamps(stamps.add(chunk), source)
                    full = len(pending) // self.window * self.window
                    if full:
                        ready = pending if full == len(pending) else pending.take(slice(0, full))  # live: the whole chunk
                        self._score(ready, arrived, summary, stream, on_window)
                        pending = pending.take(slice(full, None))
            except (KeyboardInterrupt, Stopped):
                pass  # Ctrl-C or SIGTERM (a service being stopped) ends detection cleanly; the summary still comes
            finally:
                stream.write(tracker.finish())  # the open incident closes: the alert file ends complete
        summary.seconds = time.perf_counter() - started
        return summary

    def check_vehicle(self, graphs: WindowGraphs) -> None:
        """Warn, once, where most windows are another vehicle's than the one the model was trained on
        and it was never calibrated: it judges them at its training vehicle's threshold, and on
        another car that may call every window an attack (docs/transfer.md, "Deploying to a new
        vehicle")."""
        if not self.warn_of_another_vehicle or not len(graphs):
            return
        foreign = float(self.preprocessing.foreign_windows(graphs).mean())
        if foreign >= 0.5:
            self.warn_of_another_vehicle = False
            log.warning("%s: %.0f %% of the windows hold mostly CAN IDs it was not trained on (another vehicle?) and it was "
                        "never calibrated, so its training vehicle's threshold decides; calibrate it first: "
                        "kdcore calibrate %s --normal CLEAN_CAPTURE --out CALIBRATED.pth", self.path, 100 * foreign, self.path)

    def check_stamps(self, stamps: SharedStamps, source: str) -> None:
        """Warn, once, where ``source``'s frames (``STAMP_PAIRS`` at least) share timestamps at
        another rate than the recording the model was calibrated on: another logger or interface,
        whose batching shows in every ID's timing, and the model reads that timing as the
        vehicle's (docs/transfer.md, "A logger's timing": a VGAE flagged up to 61 % of such a
        capture's normal windows, under 1 % once calibrated through the same logger)."""
        if not self.warn_of_another_logger or stamps.pairs < STAMP_PAIRS or abs(stamps.share - self.recorded_stamps) < STAMP_MARGIN:
            return
        self.warn_of_another_logger = False
        log.warning("%s: %.0f %% of the frames carry the timestamp of the frame before them, against %.0f %% in the recording "
                    "%s was calibrated on: another logger or interface, whose timing the model takes for the vehicle's; "
                    "if false alerts follow, calibrate on a recording made through this one",
                    source, 100 * stamps.share, 100 * self.recorded_stamps, self.path)

    def _score(self, frames: FrameTable, arrived: float, summary: Summary, stream: _Stream, on_window) -> None:
        graphs = build_window_graphs(node_keys(frames, self.graph_node), self.window, self.window)
        self.check_vehicle(graphs)
        with torch.inference_mode():
            if len(graphs) == 1:  # as ``apply`` prepares it, without a dataset around one window
                x, id_token = self.preprocessing.prepare(graphs.x, graphs.can_id)
                edge_index = torch.from_numpy(graphs.edge_index.astype(np.int64))
                batch = one_window_batch(torch.from_numpy(x), torch.from_numpy(id_token), edge_index)
                scores = self._score_one(batch.x, batch.id_token, batch.edge_index)
            else:  # a chunk: one batched eager call is faster than the traced scorer window by window
                batch = window_batch(self.preprocessing.apply(graphs))
                scores = self.score([batch])
        decided = time.perf_counter()
        alerting = scores >= self.threshold
        judged = self._judge_alerts(batch, alerting.nonzero().flatten(), graphs) if alerting.any() else {}
        margins = self.spread.margins(scores, self.threshold).tolist() if self.spread is not None else [None] * len(scores)
        timed = graphs.timestamps  # without timestamps, start and end are the frames' positions in the capture
        for index, (score, alert, margin) in enumerate(zip(scores.tolist(), alerting.tolist(), margins)):
            summary.windows += 1
            summary.latencies_ms.append((decided - arrived) * 1000)
            first, last = graphs.time_span[index].tolist()
            node_scores, attack_class, confidence = judged.get(index, ({}, None, None))
            window = WindowVerdict(
                index=summary.windows - 1, start=first if timed else int(first), end=last if timed else int(last),
                unit="s" if timed else "frame", frames=self.window, score=score, alert=alert,
                node_scores=node_scores, attack_class=attack_class, class_confidence=confidence, margin=margin,
            )
            stream.window(window)
            if on_window is not None:
                on_window(summary, alert)

    def _judge_alerts(self, batch: Batch, alerts: torch.Tensor, graphs: WindowGraphs) -> dict[int, tuple[dict, str | None, float | None]]:
        """Node scores by CAN ID and attack class of each alerting window, by its index in the
        chunk. Only the alerting windows go through attribution (a backward pass) and the
        classifier: on a bus where alerts are rare, a chunk with one alert pays for one window."""
        judged = batch if len(alerts) == batch.num_graphs else select_windows(batch, alerts)
        flat, ptr = self.judge.node_scores(judged).tolist(), judged.ptr.tolist()
        windows = alerts.tolist()
        scored = [dict(zip(graphs.can_id[graphs.node_ptr[index]:graphs.node_ptr[index + 1]].tolist(), flat[ptr[k]:ptr[k + 1]]))
                  for k, index in enumerate(windows)]
        classes = confidences = [None] * len(windows)
        if self.judge.classifies:
            classes, confidences = (values.tolist() for values in self.judge.classify(judged, scored))
        return {index: (scored[k], classes[k], confidences[k]) for k, index in enumerate(windows)}

    def _score_one(self, x: torch.Tensor, id_token: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """One window through the traced scorer if there is one. A traced score within the
        tolerance of the threshold (in the parity check's units) is computed again eagerly: no
        decision rests on a difference the parity check allows."""
        if self.score_window is not None:
            score = self.score_window(x, id_token, edge_index)
            if abs(float(self._decision_units(score) - self._decision_units(self.threshold))) > TOLERANCE:
                return score
        return self.score([one_window_batch(x, id_token, edge_index)])


@attrs.define
class _Stream:
    """Where a detection's lines go: incident events always, alerting windows with ``verbose``;
    each line flushed as written (alerts are for watching live)."""

    sink: IO[str] | None
    verbose: bool
    tracker: IncidentTracker
    summary: Summary
    node_field: str  # what the window line calls its nodes: can_ids, j1939_sources or j1939_pgns
    threshold: float

    def window(self, window: WindowVerdict) -> None:
        if window.alert:
            self.summary.alert_windows += 1
            if self.verbose:
                self.write([{"event_type": "window", "start": window.start, "end": window.end, "unit": window.unit,
                             self.node_field: [f"{can_id:03X}" for can_id in window.node_scores],
                             "score": round(window.score, 6), "threshold": round(self.threshold, 6),
                             "margin": None if window.margin is None else round(window.margin, 2), "decision": "attack",
                             "attack_class": window.attack_class,
                             "class_confidence": None if window.class_confidence is None else round(window.class_confidence, 4),
                             "suspects": suspects(window.node_scores)}])
        self.write(self.tracker.update(window))

    def write(self, events: list[dict[str, Any]]) -> None:
        self.summary.incidents += sum(event["event_type"] == "incident_open" for event in events)
        if self.sink is None:
            return
        for event in events:
            self.sink.write(json.dumps(event) + "\n")
            self.sink.flush()


def scoring_mode(name: str) -> NormalMode | AutoencoderMode:
    """The mode whose code scores, explains and represents the windows of a GAT or a VGAE."""
    return NormalMode() if name == "gat" else AutoencoderMode()


def model_scorer(model, name: str) -> Callable:
    """``loader → one score per window`` of a GAT (P(attack)) or VGAE (reconstruction error), by its mode's own code."""
    if name == "gat":
        return lambda loader: NormalMode().attack_probabilities(model, loader)
    return lambda loader: AutoencoderMode().window_scores(model, loader)


def model_embedder(model, name: str) -> Callable:
    """``batch → one representation per window`` of a GAT or VGAE (what its attack classes are fitted on)."""
    mode = scoring_mode(name)
    return lambda batch: mode.window_embeddings(model, batch)


class WindowScore(OneWindow):
    """The export wrapper's outputs turned into the mode's window score (GAT: P(attack); VGAE:
    reconstruction error), so the whole one-window scorer traces as one TorchScript graph."""

    def forward(self, x: torch.Tensor, id_token: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        from kdcore.plugins.modes.autoencoder import graph_scores

        outputs = super().forward(x, id_token, edge_index)
        if not self.vgae:
            return torch.softmax(outputs[0].double(), -1)[:, 1]  # as NormalMode.attack_probabilities
        return graph_scores({"recon": outputs[0]}, x, self.model.error_scale, torch.zeros_like(id_token), 1)


def _float64(score: torch.Tensor | float) -> torch.Tensor:
    return torch.as_tensor(score, dtype=torch.float64)


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


def select_windows(batch: Batch, windows: torch.Tensor) -> Batch:
    """The given windows of a batch, in their order, as a batch of their own (windows share no
    edges, so each keeps its nodes and edges whole)."""
    keep = torch.isin(batch.batch, windows)
    renumbered = torch.cumsum(keep, 0) - 1
    sizes = batch.ptr.diff()[windows]
    return Batch(x=batch.x[keep], id_token=batch.id_token[keep], edge_index=renumbered[batch.edge_index[:, keep[batch.edge_index[0]]]],
                 batch=torch.repeat_interleave(torch.arange(len(windows)), sizes), ptr=torch.cat([sizes.new_zeros(1), sizes.cumsum(0)]))


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
