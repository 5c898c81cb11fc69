"""Detection metrics from per-window scores, through torchmetrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_f1_score,
    binary_precision,
    binary_recall,
    binary_specificity,
)

from kdcore.contracts import Evaluation

if TYPE_CHECKING:
    from torch_geometric.loader import DataLoader

    from kdcore.data.module import GraphDataModule

Scorer = Callable[["DataLoader"], tuple[torch.Tensor, torch.Tensor]]


def detection_metrics(scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1, AUROC and FPR of ``scores >= threshold`` (1 = attack)."""
    scores, labels = scores.float().cpu(), labels.long().cpu()
    predictions = (scores >= threshold).long()
    has_both_classes = bool(labels.min() != labels.max()) if labels.numel() else False
    return {
        "accuracy": float(binary_accuracy(predictions, labels)),
        "precision": float(binary_precision(predictions, labels)),
        "recall": float(binary_recall(predictions, labels)),
        "f1": float(binary_f1_score(predictions, labels)),
        "auroc": float(binary_auroc(scores, labels)) if has_both_classes else float("nan"),
        "fpr": float(1.0 - binary_specificity(predictions, labels)),
        "windows": int(labels.numel()),
        "attack_windows": int(labels.sum()),
    }


def evaluate_scores(score: Scorer, datamodule: GraphDataModule, threshold: float) -> Evaluation:
    """Metrics over all test sets together, and for each named test set on its own."""
    per_set, all_scores, all_labels = {}, [], []
    for name, graphs in datamodule.test_sets.items():
        scores, labels = score(datamodule.loader(graphs))
        if len(labels):
            per_set[name] = detection_metrics(scores, labels, threshold)
        all_scores.append(scores)
        all_labels.append(labels)
    scores, labels = torch.cat(all_scores), torch.cat(all_labels)
    return Evaluation(metrics=detection_metrics(scores, labels, threshold), extra={"threshold": threshold}, per_set=per_set)
