"""Detection metrics from per-window scores, through torchmetrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Subset
from torch_geometric.loader import DataLoader
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_confusion_matrix,
    binary_f1_score,
    binary_precision,
    binary_recall,
    binary_specificity,
)

from kdcore.contracts import Evaluation

if TYPE_CHECKING:
    from kdcore.data.graphset import GraphSet
    from kdcore.data.module import GraphDataModule

Scorer = Callable[[DataLoader], torch.Tensor]  # one score per window, higher = more likely an attack
LATENCY_GRAPHS = 100


def detection_metrics(
    scores: torch.Tensor, labels: torch.Tensor, threshold: float, attack_names: np.ndarray | None = None
) -> dict:
    """Accuracy, precision, recall, F1, AUROC, FPR, confusion matrix and per-attack recall of
    ``scores >= threshold`` (1 = attack). ``attack_names`` names each window's attack type."""
    scores, labels = scores.float().cpu(), labels.long().cpu()
    predictions = (scores >= threshold).long()
    has_both_classes = bool(labels.min() != labels.max()) if labels.numel() else False
    metrics = {
        "accuracy": float(binary_accuracy(predictions, labels)),
        "precision": float(binary_precision(predictions, labels)),
        "recall": float(binary_recall(predictions, labels)),
        "f1": float(binary_f1_score(predictions, labels)),
        "auroc": float(binary_auroc(scores, labels)) if has_both_classes else float("nan"),
        "fpr": float(1.0 - binary_specificity(predictions, labels)),
        "confusion_matrix": binary_confusion_matrix(predictions, labels).tolist(),  # [[tn, fp], [fn, tp]]
        "windows": int(labels.numel()),
        "attack_windows": int(labels.sum()),
    }
    if attack_names is not None:
        attacks = labels.numpy() == 1
        detected = predictions.numpy() == 1
        metrics["per_attack_recall"] = {
            name: float(detected[attacks & (attack_names == name)].mean())
            for name in sorted(set(attack_names[attacks].tolist()))
        }
    return metrics


def window_attack_names(graphs: GraphSet) -> np.ndarray:
    return np.asarray(graphs.attack_names)[graphs.attack_type.numpy()]


def latency_ms_per_graph(score: Scorer, graphs) -> float:
    """Mean wall time to score one window on its own (batch of one), over up to 100 windows."""
    sample = Subset(graphs, range(min(LATENCY_GRAPHS, len(graphs))))
    if len(sample) == 0:
        return float("nan")
    score(DataLoader(Subset(graphs, [0]), batch_size=1))  # warm up
    started = time.perf_counter()
    score(DataLoader(sample, batch_size=1))
    return (time.perf_counter() - started) * 1000 / len(sample)


def evaluate_scores(score: Scorer, datamodule: GraphDataModule, threshold: float) -> Evaluation:
    """Metrics over all test sets together, and for each named test set on its own."""
    per_set, windows, all_scores, all_labels, all_names = {}, {}, [], [], []
    for name, graphs in datamodule.test_sets.items():
        scores = score(datamodule.loader(graphs))
        labels, names = graphs.labels, window_attack_names(graphs)
        if len(labels):
            per_set[name] = detection_metrics(scores, labels, threshold, names)
            windows[name] = {"score": scores.numpy(), "label": labels.numpy(), "attack": names}
        all_scores.append(scores)
        all_labels.append(labels)
        all_names.append(names)
    metrics = detection_metrics(torch.cat(all_scores), torch.cat(all_labels), threshold, np.concatenate(all_names))
    first_set = next(iter(datamodule.test_sets.values()))
    metrics["latency_ms_per_graph"] = latency_ms_per_graph(score, first_set)
    return Evaluation(metrics=metrics, extra={"threshold": threshold}, per_set=per_set, windows=windows)
