"""Alerting windows merged into incidents, and how alerts are judged against labels."""

import attrs
import numpy as np
import pytest
import torch

from kdcore.alert_metrics import AlertRecord, alert_metrics, bursts
from kdcore.incidents import IncidentTracker, WindowVerdict, suspects
from kdcore.metrics import ScoreSpread

INCIDENT_FIELDS = {"event_type", "incident", "start", "end", "unit", "windows", "frames", "peak_score", "attack_class",
                   "class_confidence", "suspects"}


def stream(alerts: str, node_scores=None, frames=100, period=0.05):
    """Windows from a pattern: '#' alerts, '.' does not; each window ``period`` seconds long."""
    return [WindowVerdict(index=i, start=i * period, end=(i + 1) * period - 0.001, unit="s", frames=frames,
                          score=0.9 if mark == "#" else 0.1, alert=mark == "#",
                          node_scores=(node_scores or {0x0C5: 2.0, 0x100: 1.0}) if mark == "#" else {})
            for i, mark in enumerate(alerts)]


def test_an_incident_opens_after_alerts_in_a_row_survives_short_gaps_and_closes_after_a_quiet_one():
    tracker = IncidentTracker(open_after=2, quiet_windows=3)
    events = [(window.index, event) for window in stream("#..##.##...#.###") for event in tracker.update(window)]
    events += [(None, event) for event in tracker.finish()]
    assert [(i, e["event_type"]) for i, e in events] == [
        (4, "incident_open"), (10, "incident_close"),  # the lone alert at 0 opens nothing; the gap at 5 is short
        (14, "incident_open"), (None, "incident_close"),  # closed when the stream ends
    ]
    first_close = events[1][1]
    assert set(first_close) == INCIDENT_FIELDS
    assert (first_close["incident"], first_close["windows"], first_close["frames"]) == (1, 4, 500)  # windows 3-7, the quiet 5 included
    assert first_close["start"] == pytest.approx(0.15) and first_close["end"] == pytest.approx(0.399)
    assert events[2][1]["incident"] == 2 and events[2][1]["windows"] == 2


def test_a_window_far_enough_above_the_threshold_opens_an_incident_alone():
    margins = [None, 9.0, None, 3.9, None, None, None, None, 4.0]  # windows 1, 3 and 8 alert alone
    windows = [attrs.evolve(window, margin=margin) for window, margin in zip(stream(".#.#....#"), margins)]

    def opened(sure_margin, windows=windows):
        events = IncidentTracker(open_after=2, quiet_windows=1, sure_margin=sure_margin).run(windows)
        return [round(event["start"], 3) for event in events if event["event_type"] == "incident_open"]

    assert opened(4.0) == [0.05, 0.4]
    assert opened(3.0) == [0.05, 0.15, 0.4]
    assert opened(float("inf")) == []  # never alone
    assert opened(0.0, [attrs.evolve(window, margin=None) for window in windows]) == []  # a model saved without a score spread


def test_a_margin_counts_attack_free_spreads_in_log_odds_for_a_probability():
    log_odds = torch.tensor([-6.0, -5.0, -4.0, -5.0, -6.0, 30.0], dtype=torch.float64)  # one far outlier
    spread = ScoreSpread.fit(torch.sigmoid(log_odds), probabilities=True)
    assert spread.scale == pytest.approx(1.4826)  # the median absolute deviation is 1: the outlier does not move it
    threshold = float(torch.sigmoid(torch.tensor(-3.0, dtype=torch.float64)))
    scores = torch.sigmoid(torch.tensor([-3.0, -3.0 + 3 * 1.4826, 20.0], dtype=torch.float64))
    assert spread.margins(scores, threshold) == pytest.approx([0.0, 3.0, 23 / 1.4826])
    errors = ScoreSpread.fit(torch.tensor([1.0, 2.0, 3.0]), probabilities=False)  # a VGAE's error: as it is
    assert errors.margins(np.array([2.0, 5.0]), 2.0) == pytest.approx([0.0, 3 / 1.4826])
    assert ScoreSpread.saved_in({"score_spread": errors.to_dict()}) == errors and ScoreSpread.saved_in({}) is None
    # a threshold raised by some spreads lies that many spreads above, in the same units
    assert spread.raised(threshold, 0.5) == pytest.approx(float(torch.sigmoid(torch.tensor(-3.0 + 0.5 * 1.4826))))
    assert errors.raised(2.0, 2.0) == pytest.approx(2.0 + 2 * 1.4826) and errors.raised(2.0, 0.0) == 2.0


def test_a_sure_first_window_shortens_time_to_detect():
    labels = np.array([0, 1, 1, 1, 1, 0])
    windows = [attrs.evolve(window, margin=margin) for window, margin in zip(stream("..###."), [None, None, 12.0, 1.0, 1.0, None])]
    record = AlertRecord(windows, labels, np.where(labels == 1, "dos", "normal"), [frozenset({0x0C5})] * 6,
                         np.where(labels == 1, [w.start for w in windows], np.nan))
    delays = [alert_metrics([record], IncidentTracker(sure_margin=margin))["incidents"]["time_to_detect_windows_median"]
              for margin in (4.0, float("inf"))]
    assert delays == [1.0, 2.0]  # the burst's first window (1) holds too few attack frames to alert


def test_suspects_rank_ids_by_their_share_of_each_windows_evidence():
    windows = stream("###", node_scores={0x0C5: 4.0, 0x100: 1.0, 0x7FF: -3.0})
    windows[1] = WindowVerdict(1, 0.05, 0.099, "s", 100, 0.95, True, {0x100: 10.0, 0x0C5: 5.0})
    (opened,) = IncidentTracker(open_after=3).run(windows)[:1]
    ranked = opened["suspects"]
    assert [s["can_id"] for s in ranked] == ["0C5", "100", "7FF"]
    # 0C5 leads windows 0 and 2 (1 each) and has half of window 1's top: (1 + 0.5 + 1) / 3
    assert ranked[0]["score"] == pytest.approx(2.5 / 3, abs=1e-4) and ranked[1]["score"] == pytest.approx(1.5 / 3, abs=1e-4)
    assert opened["peak_score"] == pytest.approx(0.95)
    assert suspects({0x1: 1.0, 0x2: 3.0, 0x3: 2.0}, limit=2) == [{"can_id": "002", "score": 3.0}, {"can_id": "003", "score": 2.0}]


def test_bursts_merge_attack_windows_closer_than_the_quiet_gap():
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 0])
    assert bursts(labels, quiet_windows=3) == [(1, 4), (9, 10)]
    assert bursts(labels, quiet_windows=1) == [(1, 2), (4, 4), (9, 10)]
    assert bursts(np.zeros(5, int), 3) == []


def test_alert_metrics_count_incidents_per_burst_delays_false_incidents_and_localisation():
    pattern = ".##.........##....#####..."
    labels = np.array([int(c) for c in "01100000000000000111110000"])
    windows = stream(pattern)
    attacked = [frozenset({0x0C5}) if label else frozenset() for label in labels]
    attack_start = np.array([window.start for window in windows])
    attack_start[[1, 17]] += 0.03  # each burst's first attack frame comes 0.03 s into its first window
    attack_start[labels == 0] = np.nan
    record = AlertRecord(windows, labels, np.where(labels == 1, "dos", "normal"), attacked, attack_start)
    metrics = alert_metrics([record], IncidentTracker(open_after=2, quiet_windows=3))
    incidents = metrics["incidents"]
    assert (incidents["bursts"], incidents["detected_bursts"], incidents["incidents_per_burst_median"]) == (2, 2, 1.0)
    # burst 1 starts at 1, its incident opens at 2; burst 2 starts at 17, the incident (18-22) opens at 19
    assert incidents["time_to_detect_windows_median"] == 1.5
    # seconds from the first attack frame (0.08 s; 0.88 s) to the end of the opening window (0.149 s; 0.999 s)
    assert incidents["time_to_detect_s_median"] == pytest.approx((0.069 + 0.119) / 2)
    assert incidents["false_incidents"] == 1  # windows 12-13
    normal_seconds = sum(w.end - w.start for w, label in zip(windows, labels) if label == 0)
    assert incidents["false_incidents_per_hour"] == pytest.approx(3600 / normal_seconds)
    assert incidents["localisation"] == {"count": 2, "top1": 1.0, "top3": 1.0}
    assert metrics["localisation"]["count"] == 6 and metrics["localisation"]["top1"] == 1.0  # alerting attack windows
    assert metrics["localisation"]["per_attack"]["dos"]["top1"] == 1.0


def test_without_timestamps_time_to_detect_counts_frames():
    labels = np.array([0, 1, 1, 1, 0])
    windows = [attrs.evolve(window, unit="frame", start=100 * window.index, end=100 * window.index + 99) for window in stream(".###.")]
    attack_start = np.array([np.nan, 140.0, 200.0, 300.0, np.nan])  # the burst's first attack frame is frame 140
    record = AlertRecord(windows, labels, np.where(labels == 1, "dos", "normal"), [frozenset({0x0C5})] * 5, attack_start)
    incidents = alert_metrics([record], IncidentTracker(open_after=2))["incidents"]
    assert incidents["time_to_detect_frames_median"] == 299 - 140  # opened by window 2, whose last frame is 299
    assert incidents["time_to_detect_s_median"] is None and incidents["false_incidents_per_hour"] is None


def test_a_wrong_top_suspect_counts_against_top_1_only():
    labels = np.array([1, 1, 1])
    windows = stream("###", node_scores={0x100: 3.0, 0x0C5: 2.0, 0x200: 1.0})
    record = AlertRecord(windows, labels, np.array(["spoof"] * 3), [frozenset({0x0C5})] * 3, np.array([w.start for w in windows]))
    metrics = alert_metrics([record], IncidentTracker())
    assert (metrics["localisation"]["top1"], metrics["localisation"]["top3"]) == (0.0, 1.0)


def test_an_incidents_class_is_the_one_its_windows_favour():
    windows = [attrs.evolve(window, attack_class=name, class_confidence=confidence)
               for window, (name, confidence) in zip(stream("####"), [("dos", 0.9), ("spoof", 0.6), ("dos", 0.8), ("unknown", 0.7)])]
    (opened, closed) = IncidentTracker(open_after=2).run(windows)
    assert (opened["attack_class"], opened["class_confidence"]) == ("dos", 0.45)  # 0.9 of two windows
    assert (closed["attack_class"], closed["class_confidence"]) == ("dos", pytest.approx(1.7 / 4))
    (plain, _) = IncidentTracker(open_after=2).run(stream("##"))
    assert plain["attack_class"] is None and plain["class_confidence"] is None  # a model without attack classes


def test_alert_metrics_judge_classes_and_count_unknown_right_for_an_unseen_attack():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    attacks = np.array(["dos"] * 3 + ["normal"] * 6 + ["replay"] * 3)
    predicted = ["dos", "spoof", "dos", None, None, None, None, None, None, "unknown", "unknown", "dos"]
    windows = [attrs.evolve(window, attack_class=name, class_confidence=None if name is None else 0.9)
               for window, name in zip(stream("###......###"), predicted)]
    record = AlertRecord(windows, labels, attacks, [frozenset({0x0C5})] * 12, np.array([w.start for w in windows]))
    metrics = alert_metrics([record], IncidentTracker(), classes=("dos", "spoof"))
    report = metrics["attack_classes"]
    assert report["classes"] == ["dos", "spoof", "unknown"] and report["true"] == ["dos", "replay"]
    assert report["confusion_matrix"] == [[2, 1, 0], [1, 0, 2]]
    assert report["accuracy"] == pytest.approx(2 / 3) and report["unseen_as_unknown"] == pytest.approx(2 / 3)
    assert metrics["incidents"]["class_accuracy"] == 1.0  # dos, then unknown for the replay no class knows
