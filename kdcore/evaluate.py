"""``kdcore evaluate``: score a trained model on labelled captures it was not trained with.

The captures become windows and graphs exactly as the model's training data did (its window
size, stride and label threshold, its graph nodes, its vocabulary and scaling, all from the
checkpoint), are scored by the model's own mode, and are judged against the model's saved
threshold. The metrics are a run's: over all the data at the top level, and per test set under
``test_sets``. A test set is a ``test_*`` folder of a can-train-and-test dataset folder, else one
capture file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from kdcore.alert_metrics import alert_metrics
from kdcore.data.captures import capture_files, ctt_folders
from kdcore.data.formats import read_capture
from kdcore.data.formats.base import CaptureFormat
from kdcore.data.frames import SharedStamps
from kdcore.data.windows import build_window_graphs, node_keys
from kdcore.detect import Detector
from kdcore.errors import KdcoreError
from kdcore.incidents import IncidentTracker
from kdcore.metrics import alert_record, detection_metrics, window_attack_names
from kdcore.threads import torch_threads

BATCH_WINDOWS = 512


def find_test_sets(paths: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Test-set name → its captures: each ``test_*`` folder of a can-train-and-test dataset
    folder, and each capture file (given, or found under a folder), named by its path relative
    to what was given (its file name for a file)."""
    sets: dict[str, list[Path]] = {}
    for given in map(Path, paths):
        if not given.exists():
            raise KdcoreError(f"data not found: {given}")
        layout = ctt_folders(given)
        if layout is not None:
            found = layout[1]
            if not found:
                raise KdcoreError(f"{given}: a can-train-and-test folder without test_* folders to evaluate on")
        else:
            found = {_set_name(file, given): [file] for file in capture_files(given)}
        for name, files in found.items():
            if name in sets:
                raise KdcoreError(f"two test sets named {name!r}: give the captures under different names")
            sets[name] = files
    return sets


def _set_name(file: Path, given: Path) -> str:
    return file.name if given.is_file() else str(file.relative_to(given))


def evaluate(
    detector: Detector, data: Sequence[str | Path], capture_format: str | CaptureFormat | None = None, on_bad_rows: str = "error",
    progress: Callable[[Iterable], Iterable] = iter, tracker: IncidentTracker | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """(metrics, windows): the run-like metrics of ``detector`` on ``data``, with how well its
    alerts localise and merge into incidents (``tracker``'s settings, ``detect``'s defaults if
    None), and per test set the share of its frames stamped as the one before (``shared_stamps``,
    None without timestamps: a logger that stamps in batches); and every window's score, label,
    attack name and start per test set (what ``scores.npz`` holds)."""
    window, stride = int(detector.data["window_size"]), int(detector.data.get("window_stride", detector.window))
    label_threshold = float(detector.data.get("label_threshold", 0.0))
    tracker = tracker or IncidentTracker()
    per_set, windows, records, stamps = {}, {}, {}, {}
    with torch_threads(1), torch.inference_mode():
        for name, files in progress(list(find_test_sets(data).items())):
            scores, labels, attacks, starts = [], [], [], []
            stamps[name] = SharedStamps()
            for file in files:
                table = node_keys(read_capture(file, capture_format, on_bad_rows), detector.graph_node)
                detector.check_stamps(SharedStamps().add(table), str(file))
                stamps[name].add(table, follows=False)
                graphs = build_window_graphs(table, window, stride, label_threshold)
                detector.check_vehicle(graphs)
                prepared = detector.preprocessing.apply(graphs)
                scores.append(detector.score(DataLoader(prepared, batch_size=BATCH_WINDOWS)).numpy())
                labels.append(prepared.labels.numpy())
                attacks.append(window_attack_names(prepared))
                starts.append(graphs.time_span[:, 0])
                records.setdefault(name, []).append(alert_record(prepared, scores[-1], detector.threshold, window,
                                                                 detector.judge, detector.spread))
            windows[name] = {"score": np.concatenate(scores), "label": np.concatenate(labels), "attack": np.concatenate(attacks),
                             "start": np.concatenate(starts)}
    for name, columns in windows.items():
        if len(columns["label"]) == 0:
            raise KdcoreError(f"test set {name!r}: too few frames for a single window of {window}")
        per_set[name] = {**_metrics(columns, detector.threshold), **alert_metrics(records[name], tracker, detector.judge.class_names),
                         "shared_stamps": stamps[name].rounded}
    overall = _metrics({key: np.concatenate([columns[key] for columns in windows.values()]) for key in ("score", "label", "attack")},
                       detector.threshold)
    overall.update(alert_metrics([record for parts in records.values() for record in parts], tracker, detector.judge.class_names))
    return {**overall, "threshold": detector.threshold, "test_sets": per_set}, windows


def _metrics(columns: dict[str, np.ndarray], threshold: float) -> dict[str, Any]:
    return detection_metrics(torch.from_numpy(columns["score"]), torch.from_numpy(columns["label"]), threshold, columns["attack"])
