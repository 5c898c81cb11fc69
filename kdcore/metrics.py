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
from kdcore.data.graphset import drop_profile

if TYPE_CHECKING:
    from kdcore.data.graphset import GraphSet
    from kdcore.data.module import GraphDataModule
    from kdcore.run import Run

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


def threshold_at_fpr(normal_scores: torch.Tensor, target_fpr: float) -> float:
    """The threshold that ``target_fpr`` of these attack-free windows' scores reach: their
    ``1 - target_fpr`` quantile. Fitted this way for every mode, so a threshold means the same
    false-positive rate whatever the model's score scale (a probability, a reconstruction error)."""
    if normal_scores.numel() == 0:
        raise ValueError("no attack-free windows to fit the decision threshold on")
    return float(torch.quantile(normal_scores.double(), 1.0 - target_fpr))


def best_f1_threshold(scores: torch.Tensor, labels: torch.Tensor, target_fpr: float) -> float:
    """Among the thresholds that keep these windows' false-positive rate at ``target_fpr`` or
    below (at or above ``threshold_at_fpr`` of their normal ones), the one with the best F1; of
    equally good ones, the lowest (the most sensitive the validation windows allow)."""
    floor = threshold_at_fpr(scores[labels == 0], target_fpr)
    order = torch.argsort(scores.double(), descending=True, stable=True)
    s, y = scores.double()[order], labels.long()[order]
    tp, fp = torch.cumsum(y, 0), torch.cumsum(1 - y, 0)
    f1 = 2 * tp / (tp + fp + y.sum()).clamp(min=1)  # predicting the first k + 1 windows as attacks
    last_of_ties = torch.cat([s[1:] < s[:-1], torch.tensor([True])])
    f1 = torch.where(last_of_ties & (s >= floor), f1.double(), torch.tensor(-1.0, dtype=torch.float64))
    best = torch.nonzero(f1 == f1.max()).view(-1)[-1]
    return float(s[int(best)]) if float(f1.max()) >= 0 else floor


def fitted_thresholds(score: Scorer, datamodule: GraphDataModule, target_fpr: float, representation: str) -> dict[str, float]:
    """``threshold``: the score ``target_fpr`` of the validation normal windows reach. For the
    agnostic representation also ``roles_threshold``: the same for those windows judged without
    their profile, as a vehicle the model was not trained on is judged — the floor ``kdcore
    calibrate`` keeps for another vehicle."""
    loader = datamodule.loader(datamodule.normal(datamodule.val_set))
    thresholds = {"threshold": threshold_at_fpr(score(loader), target_fpr)}
    if representation == "agnostic":
        without = (drop_profile(batch, 1.0) for batch in loader)
        thresholds["roles_threshold"] = threshold_at_fpr(score(without), target_fpr)
    return thresholds


def evaluate_at_fitted_threshold(score: Scorer, run: Run) -> Evaluation:
    """What the built-in modes evaluate: thresholds fitted on validation normal windows at the
    run's ``target_fpr`` (``fitted_thresholds``, saved with the model), then ``evaluate_scores``."""
    thresholds = fitted_thresholds(score, run.datamodule, run.config.target_fpr, run.config.representation)
    return evaluate_scores(score, run.datamodule, thresholds["threshold"], thresholds)


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


def evaluate_scores(score: Scorer, datamodule: GraphDataModule, threshold: float, extra: dict | None = None) -> Evaluation:
    """Metrics over all test sets together, and for each named test set on its own; ``extra``
    is saved with the model beside the threshold."""
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
    return Evaluation(metrics=metrics, extra={**(extra or {}), "threshold": threshold}, per_set=per_set, windows=windows)
