"""Alerting windows merged into incidents: one line when an attack starts, one when it ends.

A window is judged on its own; an attack spans many windows. ``IncidentTracker`` opens an
incident once ``open_after`` windows in a row alert (a lone alerting window is the kind of false
alarm a threshold at ``target_fpr`` lets through about once in 1 / target_fpr windows) — or at
once on a window ``sure_margin`` or more score spreads above the threshold (its ``margin``, see
``kdcore.metrics.ScoreSpread``), far beyond where a threshold's false alarms lie: an attack's
first window holds only the frames after it began, often too few to alert, so waiting for a
second alerting window after it cost a window's delay on many bursts (docs/deployment.md). It keeps it
open through gaps of fewer than ``quiet_windows`` windows without an alert, and closes it at the
last alerting window. Each event is a plain dict, written by ``detect`` as one JSON line, so a SIEM
can follow an attack live; the field names are documented in docs/deployment.md and stay.

An incident's attack class is the one its alerting windows' confidences favour most (``unknown``
included), with their mean confidence in it. Suspects are the CAN IDs that drove the decisions: each alerting window's node scores are taken
relative to its most suspicious node (which scores 1), and an incident ranks its IDs by their mean
over its alerting windows — an ID that leads every window scores 1.

Nothing here needs torch: ``evaluate`` replays scored windows through the same tracker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

OPEN_AFTER = 2  # alerting windows in a row that open an incident
SURE_MARGIN = 8.0  # score spreads above the threshold at which one alerting window opens an incident alone
QUIET_WINDOWS = 5  # windows in a row without an alert that close one
SUSPECTS = 5  # IDs named per alert line


@attrs.frozen
class WindowVerdict:
    """One scored window: where it lies, how it was judged, and (alerting) its nodes' scores."""

    index: int  # position in the stream, from 0
    start: float  # first frame's time, or its position in the capture without timestamps
    end: float
    unit: str  # "s", or "frame" without timestamps
    frames: int
    score: float
    alert: bool
    node_scores: dict[int, float] = attrs.field(factory=dict)  # CAN ID → score; alerting windows only
    attack_class: str | None = None  # alerting windows of a model with attack classes (``kdcore.classes``)
    class_confidence: float | None = None
    margin: float | None = None  # score spreads above the threshold (``ScoreSpread.margins``); None: the model has no spread


def suspects(node_scores: dict[int, float], limit: int = SUSPECTS) -> list[dict[str, Any]]:
    """The ``limit`` highest-scoring IDs, most suspicious first, as alert lines name them."""
    ranked = sorted(node_scores.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [{"can_id": f"{can_id:03X}", "score": round(score, 4)} for can_id, score in ranked]


def relative(node_scores: dict[int, float]) -> dict[int, float]:
    """Scores divided by the window's highest (its most suspicious node scores 1)."""
    top = max(node_scores.values(), default=0.0)
    return {can_id: score / top for can_id, score in node_scores.items()} if top > 0 else dict.fromkeys(node_scores, 0.0)


@attrs.define
class Incident:
    """An incident as it grows: its alerting windows, their peak, suspects and class votes."""

    number: int
    first: WindowVerdict
    last: WindowVerdict
    windows: int = 0  # alerting windows
    frames: int = 0  # frames from the first alerting window to the last, quiet windows between included
    peak_score: float = float("-inf")
    id_sums: dict[int, float] = attrs.field(factory=dict)
    class_votes: dict[str, float] = attrs.field(factory=dict)  # class → summed confidence of the windows naming it

    def add(self, window: WindowVerdict, quiet_frames: int) -> None:
        self.last = window
        self.windows += 1
        self.frames += window.frames + quiet_frames
        self.peak_score = max(self.peak_score, window.score)
        for can_id, share in relative(window.node_scores).items():
            self.id_sums[can_id] = self.id_sums.get(can_id, 0.0) + share
        if window.attack_class is not None:
            self.class_votes[window.attack_class] = self.class_votes.get(window.attack_class, 0.0) + window.class_confidence

    def ranked(self) -> dict[int, float]:
        return {can_id: total / self.windows for can_id, total in self.id_sums.items()}

    def attack_class(self) -> tuple[str | None, float | None]:
        """The class its windows' confidences favour, and their mean confidence in it over its windows."""
        if not self.class_votes:
            return None, None
        name = max(self.class_votes, key=lambda key: (self.class_votes[key], key))
        return name, self.class_votes[name] / self.windows

    def event(self, event_type: str) -> dict[str, Any]:
        attack_class, confidence = self.attack_class()
        return {
            "event_type": event_type,
            "incident": self.number,
            "start": self.first.start,
            "end": self.last.end,
            "unit": self.first.unit,
            "windows": self.windows,
            "frames": self.frames,
            "peak_score": round(self.peak_score, 6),
            "attack_class": attack_class,  # None: the model has no attack classes
            "class_confidence": None if confidence is None else round(confidence, 4),
            "suspects": suspects(self.ranked()),
        }


@attrs.define
class IncidentTracker:
    """Turns a stream of ``WindowVerdict``s into ``incident_open`` and ``incident_close`` events."""

    open_after: int = attrs.field(default=OPEN_AFTER, validator=attrs.validators.ge(1))
    quiet_windows: int = attrs.field(default=QUIET_WINDOWS, validator=attrs.validators.ge(1))
    sure_margin: float = attrs.field(default=SURE_MARGIN, validator=attrs.validators.ge(0))  # inf: never alone
    incidents: int = 0  # opened so far
    current: Incident | None = None
    pending: list[WindowVerdict] = attrs.field(factory=list)  # alerting windows in a row, not yet an incident
    quiet: list[WindowVerdict] = attrs.field(factory=list)  # windows without an alert since the last alerting one

    def update(self, window: WindowVerdict) -> list[dict[str, Any]]:
        """The events ``window`` causes (none, an open, a close, or both: a close then an open)."""
        if not window.alert:
            self.pending.clear()
            if self.current is None:
                return []
            self.quiet.append(window)
            return self.finish() if len(self.quiet) >= self.quiet_windows else []
        if self.current is not None:
            self.current.add(window, sum(quiet.frames for quiet in self.quiet))
            self.quiet.clear()
            return []
        self.pending.append(window)
        sure = window.margin is not None and window.margin >= self.sure_margin
        if len(self.pending) < self.open_after and not sure:
            return []
        self.incidents += 1
        self.current = Incident(self.incidents, self.pending[0], self.pending[0])
        for alerting in self.pending:
            self.current.add(alerting, 0)
        self.pending.clear()
        return [self.current.event("incident_open")]

    def finish(self) -> list[dict[str, Any]]:
        """Close the open incident, if any (at a quiet gap, or when the stream ends)."""
        if self.current is None:
            return []
        closed, self.current = self.current, None
        self.quiet.clear()
        return [closed.event("incident_close")]

    def run(self, windows: Iterable[WindowVerdict]) -> list[dict[str, Any]]:
        """Every event of a whole stream, the last incident closed at its end."""
        events = [event for window in windows for event in self.update(window)]
        return events + self.finish()
