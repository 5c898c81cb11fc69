"""How useful a detector's alerts are on labelled traffic: does the top suspect name an attacked
CAN ID, does each attack burst give one incident, how soon, and how many incidents are false.

``kdcore evaluate`` and a run's evaluation collect an ``AlertRecord`` per capture (its windows in order, as ``detect`` judged
them, with their labels and attacked IDs) and ``alert_metrics`` sums them up. A *burst* is a run
of attack windows, runs less than the tracker's quiet gap apart counted as one (the gap that keeps
one incident open). numpy only: no model is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from kdcore.classes import UNKNOWN, class_report
from kdcore.incidents import Incident, IncidentTracker, WindowVerdict, suspects

LISTED_INCIDENTS = 100  # incidents listed per test set (for the report's timeline), the first ones


@attrs.frozen
class AlertRecord:
    """One capture's windows in stream order, as judged, with the truth."""

    windows: list[WindowVerdict]
    labels: np.ndarray  # 1: attack window
    attacks: np.ndarray  # attack name per window ("normal" for normal windows)
    attacked: list[frozenset[int]]  # per window: the IDs of its attack frames
    attack_start: np.ndarray  # per window: the time of its first attack frame (NaN: none)


def bursts(labels: np.ndarray, quiet_windows: int) -> list[tuple[int, int]]:
    """(first, last) window of each burst: attack windows less than ``quiet_windows`` apart merged."""
    attack = np.flatnonzero(labels == 1)
    if not len(attack):
        return []
    breaks = np.flatnonzero(np.diff(attack) > quiet_windows)
    return list(zip(attack[np.r_[0, breaks + 1]].tolist(), attack[np.r_[breaks, len(attack) - 1]].tolist()))


def _top_hits(ranked: dict[int, float], attacked: frozenset[int]) -> tuple[bool, bool]:
    order = sorted(ranked, key=lambda can_id: (-ranked[can_id], can_id))
    return bool(order[:1] and order[0] in attacked), any(can_id in attacked for can_id in order[:3])


def _shares(hits: list[tuple[bool, bool]]) -> dict[str, Any]:
    top1, top3 = (float(np.mean([hit[k] for hit in hits])) if hits else None for k in (0, 1))
    return {"count": len(hits), "top1": top1, "top3": top3}


def alert_metrics(records: Sequence[AlertRecord], tracker: IncidentTracker, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """``localisation`` of detected attack windows (overall and per attack), and ``incidents``:
    per burst, how many incidents and how soon; incidents outside every burst, per hour of normal
    traffic (with timestamps); whether each true incident's top suspects name an attacked ID; the
    first ``LISTED_INCIDENTS`` incidents as ``incident_close`` lines (``listed``). With
    the model's attack ``classes``, also ``attack_classes``: the class report of the detected
    attack windows, and the incidents' class accuracy (against their windows' most common attack,
    ``unknown`` being right for an attack the classes do not know)."""
    window_hits: dict[str, list[tuple[bool, bool]]] = {}
    true_classes, predicted_classes, incident_classes, listed = [], [], [], []
    incident_hits, per_burst, delays = [], [], []
    delay_spans: dict[str, list[float]] = {"s": [], "frame": []}  # first attack frame → the opening window's end
    false_incidents, normal_seconds, timed = 0, 0.0, True
    for record in records:
        for window, label, attack, attacked in zip(record.windows, record.labels, record.attacks, record.attacked):
            if window.alert and label == 1 and window.node_scores:
                window_hits.setdefault(str(attack), []).append(_top_hits(window.node_scores, attacked))
                true_classes.append(str(attack))
                predicted_classes.append(window.attack_class)
            if label == 0:
                normal_seconds += window.end - window.start
            timed &= window.unit == "s"
        incidents = replayed_incidents(record.windows, tracker)
        listed += [{**incident.event("incident_close"), "suspects": suspects(incident.ranked(), 3)}
                   for incident, _ in incidents[: LISTED_INCIDENTS - len(listed)]]
        for first, last in bursts(record.labels, tracker.quiet_windows):
            overlapping = [opened for incident, opened in incidents if incident.first.index <= last and incident.last.index >= first]
            per_burst.append(len(overlapping))
            if overlapping:
                delays.append(max(overlapping[0] - first, 0))  # an incident already open when the burst began: no delay
                opening = record.windows[overlapping[0]]
                delay_spans[opening.unit].append(max(opening.end - record.attack_start[first], 0.0))
        for incident, _ in incidents:
            truth = [i for i in range(incident.first.index, incident.last.index + 1) if record.labels[i] == 1]
            if not truth:
                false_incidents += 1
                continue
            incident_hits.append(_top_hits(incident.ranked(), frozenset().union(*(record.attacked[i] for i in truth))))
            attacks, counts = np.unique(record.attacks[truth], return_counts=True)
            attack = attacks[counts.argmax()]
            incident_classes.append(incident.attack_class()[0] == (attack if classes is None or attack in classes else UNKNOWN))
    hours = normal_seconds / 3600 if timed else None
    reports = {}
    if classes is not None:
        reports["attack_classes"] = class_report(true_classes, predicted_classes, classes)
    return {
        **reports,
        "localisation": {**_shares([hit for hits in window_hits.values() for hit in hits]),
                         "per_attack": {name: _shares(hits) for name, hits in sorted(window_hits.items())}},
        "incidents": {
            "bursts": len(per_burst),
            "detected_bursts": sum(count > 0 for count in per_burst),
            "incidents_per_burst_median": float(np.median(per_burst)) if per_burst else None,
            "time_to_detect_windows_median": float(np.median(delays)) if delays else None,
            "time_to_detect_s_median": float(np.median(delay_spans["s"])) if delay_spans["s"] else None,
            "time_to_detect_frames_median": float(np.median(delay_spans["frame"])) if delay_spans["frame"] else None,
            "false_incidents": false_incidents,
            "normal_hours": hours,
            "false_incidents_per_hour": false_incidents / hours if hours else None,
            "localisation": _shares(incident_hits),
            "class_accuracy": float(np.mean(incident_classes)) if classes is not None and incident_classes else None,
            "listed": listed,
        },
    }


def replayed_incidents(windows: list[WindowVerdict], tracker: IncidentTracker) -> list[tuple[Incident, int]]:
    """Every incident of ``windows`` (indexed from 0), replayed through a fresh tracker with
    ``tracker``'s settings, with the index of the window that opened it."""
    replay = IncidentTracker(open_after=tracker.open_after, quiet_windows=tracker.quiet_windows, sure_margin=tracker.sure_margin)
    incidents = []
    for window in windows:
        if any(event["event_type"] == "incident_open" for event in replay.update(window)):
            incidents.append((replay.current, window.index))
    replay.finish()
    return incidents
