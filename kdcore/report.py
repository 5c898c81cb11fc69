"""Collect the metrics of every complete run under an experiment root, for comparison tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdcore.errors import KdcoreError

COLUMNS = {  # key in the row → heading
    "dataset": "dataset",
    "model": "model",
    "model_size": "size",
    "mode": "mode",
    "kd": "KD",
    "params": "params",
    "f1": "F1",
    "auroc": "AUROC",
    "fpr": "FPR",
    "latency_ms_per_graph": "ms/graph",
}
TEXT_COLUMNS = ("dataset", "model", "model_size", "mode", "kd")


def collect_runs(experiment_root: str | Path) -> list[dict[str, Any]]:
    """One row per complete run (a ``metrics.json`` written last), teachers before students."""
    root = Path(experiment_root)
    if not root.is_dir():
        raise KdcoreError(f"experiment root not found: {root}")
    rows = []
    for path in sorted(root.rglob("metrics.json")):
        metrics = json.loads(path.read_text())
        if "mode" not in metrics:
            continue
        rows.append({**metrics, "kd": metrics.get("strategy") or "-", "run_dir": str(path.parent)})
    size_order = {"teacher": 0, "student": 1}
    rows.sort(key=lambda r: (r["dataset"], r["model"], size_order.get(r["model_size"], 2), r["kd"] != "-", r["mode"]))
    return rows
