"""Detection metrics from per-window scores, through torchmetrics."""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_f1_score,
    binary_precision,
    binary_recall,
    binary_specificity,
)


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
