"""Detection metrics from per-window scores, through torchmetrics; the thresholds and attack
classes fitted after training; and the judging of alerts on the test sets (``alert_metrics``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

import attrs
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

from kdcore.alert_metrics import AlertRecord, alert_metrics
from kdcore.classes import AttackClasses, error_shares, suspect_cue, top_suspect_share
from kdcore.contracts import POOLED_NODES, Evaluation
from kdcore.data.graphset import drop_profile, labels_of
from kdcore.incidents import IncidentTracker, WindowVerdict

if TYPE_CHECKING:
    from kdcore.data.graphset import GraphSet, MappedGraphSet
    from kdcore.data.module import GraphDataModule
    from kdcore.run import Run

Scorer = Callable[[DataLoader], torch.Tensor]  # one score per window, higher = more likely an attack
Embedder = Callable[[object], torch.Tensor]  # a batch → one representation per window (``TrainingMode.window_embeddings``)
NodeScorer = Callable[[object], torch.Tensor]  # a batch → one score per node (``TrainingMode.node_scores``)
LATENCY_GRAPHS = 100


def detection_metrics(
    scores: torch.Tensor, labels: torch.Tensor, threshold: float, attack_names: np.ndarray | None = None
) -> dict:
    """Accuracy, precision, recall, F1, AUROC, FPR, confusion matrix and per-attack recall of
    ``scores >= threshold`` (1 = attack). ``attack_names`` names each window's attack type."""
    scores, labels = scores.double().cpu(), labels.long().cpu()  # float64: P(attack) near 1 differs below float32 resolution
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


# How far p is kept off 0 and 1: float64's resolution near 1, so log-odds reach ±34.5. A confident
# GAT can put a new vehicle's windows, and its threshold there, above 1 − 10⁻⁷.
PROBABILITY_FLOOR = 1e-15


def log_odds(probability: torch.Tensor | float) -> torch.Tensor:
    """A probability's log(p / (1 − p)), in float64, p kept off 0 and 1: the units in which a
    GAT's (or a fused detector's) scores spread as evenly as a VGAE's errors do."""
    p = torch.as_tensor(probability, dtype=torch.float64).clamp(PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return torch.log(p) - torch.log1p(-p)


def robust_spread(scores: torch.Tensor) -> float:
    """1.4826 · the median absolute deviation (the standard deviation, for normal data, that a few
    outliers do not move); the standard deviation where most scores tie, and a thousandth of the
    median's size where all do — a spread is never zero."""
    scores = scores.double()
    median = float(scores.median())
    spread = float((scores - median).abs().median()) * 1.4826
    if not spread > 0:
        spread = float(scores.std()) if len(scores) > 1 else 0.0
    return spread if spread > 0 else max(abs(median), 1.0) * 1e-3


@attrs.frozen
class ScoreSpread:
    """How widely a model's scores spread over attack-free windows (``robust_spread``), in
    log-odds for a score that is a probability (the GAT's, the fused detector's), as they are for
    an error (the VGAE's). A window's *margin* — how many spreads its score lies above the
    threshold — says how surely it is an attack in units every model shares: an incident opens on
    one window whose margin is wide enough (``kdcore.incidents``)."""

    scale: float
    log_odds: bool

    @classmethod
    def fit(cls, normal_scores: torch.Tensor, probabilities: bool) -> ScoreSpread:
        """From attack-free windows' scores; ``probabilities``: they are probabilities, spread in log-odds."""
        return cls(robust_spread(log_odds(normal_scores) if probabilities else normal_scores), probabilities)

    def margins(self, scores: torch.Tensor | np.ndarray, threshold: float) -> np.ndarray:
        """Each score's distance above ``threshold``, in spreads (negative below it)."""
        scores, threshold = torch.as_tensor(scores, dtype=torch.float64), torch.tensor(threshold, dtype=torch.float64)
        if self.log_odds:
            scores, threshold = log_odds(scores), log_odds(threshold)
        return ((scores - threshold) / self.scale).numpy()

    def raised(self, threshold: float, spreads: float) -> float:
        """``threshold`` moved ``spreads`` spreads up (in log-odds for a probability); none: itself,
        not its round trip through log-odds."""
        if spreads == 0:
            return threshold
        if self.log_odds:
            return float(torch.sigmoid(log_odds(threshold) + spreads * self.scale))
        return threshold + spreads * self.scale

    @classmethod
    def saved_in(cls, extra: dict) -> ScoreSpread | None:
        """The spread saved with a checkpoint (its ``extra``); None for one saved before spreads were."""
        saved = extra.get("score_spread")
        return None if saved is None else cls(float(saved["scale"]), bool(saved["log_odds"]))

    def to_dict(self) -> dict:
        return {"scale": self.scale, "log_odds": self.log_odds}


def best_f1_threshold(scores: torch.Tensor, labels: torch.Tensor, target_fpr: float) -> float:
    """Among the thresholds that keep these windows' false-positive rate at ``target_fpr`` or
    below (at or above ``threshold_at_fpr`` of their normal ones), the one with the best F1; of
    equally good ones, the lowest (the most sensitive the validation windows allow): just above
    the highest window left out, not at the lowest window flagged — where normal and attack
    windows are apart, that is the gap's lower end, not its upper one."""
    floor = threshold_at_fpr(scores[labels == 0], target_fpr)
    order = torch.argsort(scores.double(), descending=True, stable=True)
    s, y = scores.double()[order], labels.long()[order]
    tp, fp = torch.cumsum(y, 0), torch.cumsum(1 - y, 0)
    f1 = 2 * tp / (tp + fp + y.sum()).clamp(min=1)  # predicting the first k + 1 windows as attacks
    last_of_ties = torch.cat([s[1:] < s[:-1], torch.tensor([True])])
    f1 = torch.where(last_of_ties & (s >= floor), f1.double(), torch.tensor(-1.0, dtype=torch.float64))
    if float(f1.max()) < 0:
        return floor
    best = int(torch.nonzero(f1 == f1.max()).view(-1)[-1])
    ranked = scores[order]  # in the scores' own precision, in which they will be compared
    left_out = float(torch.nextafter(ranked[best + 1], ranked[best])) if best + 1 < len(s) else floor
    return max(floor, left_out)


def fitted_thresholds(score: Scorer, datamodule: GraphDataModule, target_fpr: float, representation: str,
                      judging_roles: Callable[[], AbstractContextManager] = nullcontext, probabilities: bool = False,
                      headroom: float = 0.0) -> dict:
    """``threshold``: the score ``target_fpr`` of the validation normal windows reach, raised by up
    to ``headroom`` of their ``score_spread`` (``ScoreSpread``; ``probabilities``: the scores are
    probabilities), but never past a validation attack window it catches (``raised_while_validated``).
    For the agnostic representation also ``roles_threshold``: the same for the validation windows judged
    without their profile, as a vehicle the model was not trained on is judged — the floor
    ``kdcore calibrate`` keeps for another vehicle — scored within ``judging_roles()``, the model
    as it judges such windows (the VGAE: with its roles error scale). Beside each, the validation
    normal windows' median score (``normal_median``, ``roles_normal_median``): where the floor
    sits above them, which calibration keeps when it moves a GAT's floor to another car's level."""
    labels = labels_of(datamodule.val_set)
    loader = datamodule.loader(datamodule.val_set)
    scores = score(loader)
    spread = ScoreSpread.fit(scores[labels == 0], probabilities)
    thresholds = {"threshold": raised_while_validated(scores, labels, target_fpr, spread, headroom), "score_spread": spread.to_dict(),
                  "normal_median": float(scores[labels == 0].double().median())}
    if representation == "agnostic":
        with judging_roles():
            roles_scores = score(drop_profile(batch, 1.0) for batch in loader)
        roles_spread = ScoreSpread.fit(roles_scores[labels == 0], probabilities)
        thresholds["roles_threshold"] = raised_while_validated(roles_scores, labels, target_fpr, roles_spread, headroom)
        thresholds["roles_normal_median"] = float(roles_scores[labels == 0].double().median())
    return thresholds


def raised_while_validated(scores: torch.Tensor, labels: torch.Tensor, target_fpr: float, spread: ScoreSpread,
                           headroom: float) -> float:
    """The ``1 - target_fpr`` quantile of the normal windows' ``scores``, raised by up to ``headroom``
    spreads — but never past an attack window among ``scores`` that the quantile catches: the
    threshold rises through normal windows only, and stops at the lowest such attack.

    Headroom, because the vehicle's other drives are not the validation windows over again: at
    the quantile itself, models that ranked every attack of the training vehicle above every
    normal window flagged up to 11 % of its other drives. Never past a caught attack, because one
    spread is not the same room for every model: a GAT trained on ROAD spread its normal windows
    over 6-17 log-odds, and a full spread put its threshold above its masquerades
    (docs/transfer.md, "Headroom in training")."""
    quantile = threshold_at_fpr(scores[labels == 0], target_fpr)
    raised = spread.raised(quantile, headroom)
    caught = scores[(labels == 1) & (scores.double() >= quantile)]
    return min(raised, float(caught.min())) if len(caught) else raised


def evaluate_at_fitted_threshold(score: Scorer, run: Run, embed: Embedder | None = None, node_scores: NodeScorer | None = None,
                                 judging_roles: Callable[[], AbstractContextManager] = nullcontext, probabilities: bool = False,
                                 fitted_on: str = POOLED_NODES) -> Evaluation:
    """What the built-in modes evaluate: thresholds and the score spread fitted on validation normal
    windows at the run's ``target_fpr`` and ``threshold_headroom`` (``fitted_thresholds``, saved with the model), attack classes on the
    model's window representation ``embed`` (named ``fitted_on``) when the data names its attacks
    (saved as ``attack_classes``), then ``evaluate_scores``, judging the alerts with ``node_scores``.
    Windows judged by roles alone are scored within ``judging_roles()``."""
    config = run.config
    extra: dict = fitted_thresholds(score, run.datamodule, config.target_fpr, config.representation, judging_roles, probabilities,
                                    config.threshold_headroom)
    vehicle_ids = training_vehicle_ids(run.datamodule)
    classes = {} if embed is None else fit_attack_classes(embed, run.datamodule, config.representation, node_scores, vehicle_ids,
                                                          fitted_on, judging_roles)
    extra.update({key: fitted.to_dict() for key, fitted in classes.items()})
    judge = AlertJudge(node_scores, classes.get("attack_classes"), embed, vehicle_ids) if node_scores is not None else None
    return evaluate_scores(score, run.datamodule, extra["threshold"], extra, judge)


def training_vehicle_ids(datamodule: GraphDataModule) -> np.ndarray | None:
    """The IDs the training vehicle sends (its preprocessing's vocabulary); None for data without one."""
    saved = datamodule.splits.state.get("preprocessing")
    return None if saved is None else np.asarray(saved["vocabulary"], dtype=np.uint32)


def fit_attack_classes(embed: Embedder, datamodule: GraphDataModule, representation: str, node_scores: NodeScorer | None = None,
                       vehicle_ids: np.ndarray | None = None, fitted_on: str = POOLED_NODES,
                       judging_roles: Callable[[], AbstractContextManager] = nullcontext) -> dict[str, AttackClasses]:
    """``attack_classes`` (``kdcore.classes``) of the attack windows of the training and validation
    splits, with their ``suspect_cue``s against ``vehicle_ids`` and their ``top_suspect_share``s
    where ``node_scores`` are given, and the spread of the validation normal windows (what
    ``kdcore calibrate`` compares a new vehicle's with); for the agnostic representation also
    ``roles_attack_classes``, of the same windows judged without their profile and within
    ``judging_roles()``, as another vehicle is judged (what ``kdcore calibrate`` switches to).
    Empty where no attack is named."""
    views = {"attack_classes": (lambda batch: batch, nullcontext)}
    if representation == "agnostic":
        views["roles_attack_classes"] = (lambda batch: drop_profile(batch, 1.0), judging_roles)
    embeddings, cues, top_shares = ({key: [] for key in views} for _ in range(3))
    names = []
    for graphs in (datamodule.train_set, datamodule.val_set):
        known = attack_names_of(graphs)
        attacks = torch.nonzero(labels_of(graphs) == 1).view(-1).tolist()
        if known is None or not attacks:
            continue
        loader = datamodule.loader(Subset(graphs, attacks))
        for windows, batch in zip(_batched(attacks, loader.batch_size), loader):
            names.append(np.asarray(known)[batch.attack_type.cpu().numpy()])
            for key, (view, judging) in views.items():
                with judging():
                    embeddings[key].append(embed(view(batch)).cpu().numpy())
                    if node_scores is not None:
                        scored = _nodes_by_id(graphs, windows, node_scores(view(batch)), batch.ptr)
                        cues[key].append([suspect_cue(nodes, vehicle_ids, vehicles_own=True) for nodes in scored])
                        top_shares[key].append([top_suspect_share(nodes) for nodes in scored])
    if not names:
        return {}
    normal, normal_shares = ({key: [] for key in views} for _ in range(2))
    for batch in datamodule.loader(datamodule.normal(datamodule.val_set)):  # read once for every view
        for key, (view, judging) in views.items():
            with judging():
                normal[key].append(embed(view(batch)).cpu().numpy())
                if node_scores is not None:
                    normal_shares[key].append(error_shares(node_scores(view(batch)).cpu().numpy(), batch.ptr.cpu().numpy()))
    joined = lambda parts: np.concatenate(parts) if parts and all(part is not None for part in parts) else None  # noqa: E731
    return {key: AttackClasses.fit(np.concatenate(embeddings[key]), np.concatenate(names), joined(cues[key]), joined(normal[key]),
                                   fitted_on, joined(top_shares[key]), joined(normal_shares[key])) for key in views}


def _batched(items: list, size: int) -> list[list]:
    return [items[first:first + size] for first in range(0, len(items), size)]


def _nodes_by_id(graphs, windows: list[int], node_scores: torch.Tensor, ptr: torch.Tensor) -> list[dict[int, float]]:
    """Each window's node scores (a batch's, flat) by its nodes' CAN IDs."""
    flat, ptr = node_scores.cpu().tolist(), ptr.tolist()
    return [dict(zip(graphs.window_nodes(index)[0].tolist(), flat[ptr[k]:ptr[k + 1]])) for k, index in enumerate(windows)]


def attack_names_of(graphs) -> tuple[str, ...] | None:
    """The attack names a split's ``attack_type`` indexes (None for graphs that carry none)."""
    if isinstance(graphs, Subset):
        return attack_names_of(graphs.dataset)
    return getattr(graphs, "attack_names", None)


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


@attrs.frozen
class AlertJudge:
    """What judging a model's alerts needs (``alert_metrics``): its node scores and, if it has
    attack classes, those classes, the window representation they were fitted on and the IDs the
    vehicle sends (``kdcore.classes.suspect_cue``). The classes read their cues from the node
    scores they were fitted with: ``class_node_scores`` where those are not the alerts' own (a
    fused detector's alerts mix two models' node scores; its classes are its GAT's)."""

    node_scores: NodeScorer
    classes: AttackClasses | None = None
    embed: Embedder | None = None
    vehicle_ids: np.ndarray | None = None
    class_node_scores: NodeScorer | None = None

    @property
    def classifies(self) -> bool:
        return self.classes is not None and self.embed is not None

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return self.classes.names if self.classifies else None

    def classify(self, batch, node_scores: list[dict[int, float]]) -> tuple[np.ndarray, np.ndarray]:
        """(attack class, confidence) of each window of ``batch``, given its nodes' scores by CAN ID
        (in the batch's node order)."""
        if self.class_node_scores is not None:
            flat, ptr = self.class_node_scores(batch).tolist(), batch.ptr.tolist()
            node_scores = [dict(zip(nodes, flat[ptr[k]:ptr[k + 1]])) for k, nodes in enumerate(node_scores)]
        cues = np.array([suspect_cue(nodes, self.vehicle_ids) for nodes in node_scores], np.float64)
        top_shares = np.array([top_suspect_share(nodes) for nodes in node_scores], np.float64)
        return self.classes.predict(self.embed(batch).cpu().numpy(), cues, top_shares)


def evaluate_scores(score: Scorer, datamodule: GraphDataModule, threshold: float, extra: dict | None = None,
                    judge: AlertJudge | None = None) -> Evaluation:
    """Metrics over all test sets together, and for each named test set on its own; ``extra``
    is saved with the model beside the threshold. With a ``judge``, also how the alerts localise,
    classify and merge into incidents (``alert_metrics``, with ``detect``'s incident settings and
    the ``score_spread`` in ``extra``)."""
    per_set, windows, all_scores, all_labels, all_names, records = {}, {}, [], [], [], []
    spread = ScoreSpread.saved_in(extra or {})
    for name, graphs in datamodule.test_sets.items():
        scores = score(datamodule.loader(graphs))
        labels, names = graphs.labels, window_attack_names(graphs)
        if len(labels):
            per_set[name] = detection_metrics(scores, labels, threshold, names)
            windows[name] = {"score": scores.numpy(), "label": labels.numpy(), "attack": names, "start": graphs.time_span[:, 0].numpy()}
            if judge is not None:
                records.append(alert_record(graphs, scores.numpy(), threshold, datamodule.config.window_size, judge, spread,
                                            datamodule.config.batch_size))
                per_set[name].update(alert_metrics(records[-1:], IncidentTracker(), judge.class_names))
        all_scores.append(scores)
        all_labels.append(labels)
        all_names.append(names)
    metrics = detection_metrics(torch.cat(all_scores), torch.cat(all_labels), threshold, np.concatenate(all_names))
    if records:
        metrics.update(alert_metrics(records, IncidentTracker(), judge.class_names))
    first_set = next(iter(datamodule.test_sets.values()))
    metrics["latency_ms_per_graph"] = latency_ms_per_graph(score, first_set)
    return Evaluation(metrics=metrics, extra={**(extra or {}), "threshold": threshold}, per_set=per_set, windows=windows)


def alert_record(graphs: GraphSet | MappedGraphSet, scores: np.ndarray, threshold: float, window: int, judge: AlertJudge,
                 spread: ScoreSpread | None = None, batch_size: int = 512) -> AlertRecord:
    """The windows of ``graphs`` as ``kdcore detect`` judges them, in order: the alerting ones with
    their nodes' scores, attack class and (with the model's ``spread``) margin; with every window's
    label and attacked IDs."""
    alerting = np.flatnonzero(scores >= threshold).tolist()
    margins = spread.margins(scores, threshold).tolist() if spread is not None else [None] * len(scores)
    per_node, classes = {}, {}
    for windows, batch in zip(_batched(alerting, batch_size), DataLoader(Subset(graphs, alerting), batch_size=batch_size)):
        scored = _nodes_by_id(graphs, windows, judge.node_scores(batch), batch.ptr)
        per_node.update(zip(windows, scored))
        if judge.classifies:
            names, confidences = judge.classify(batch, scored)
            classes.update(zip(windows, zip(names.tolist(), confidences.tolist())))
    unit = "s" if graphs.timestamps else "frame"
    labels = graphs.labels.numpy()
    verdicts, attacked = [], []
    for index, (score, margin, (first, last)) in enumerate(zip(scores.tolist(), margins, graphs.time_span.tolist())):
        attack_class, confidence = classes.get(index, (None, None))
        verdicts.append(WindowVerdict(index=index, start=first, end=last, unit=unit, frames=window, score=score,
                                      alert=index in per_node, node_scores=per_node.get(index, {}),
                                      attack_class=attack_class, class_confidence=confidence, margin=margin))
        if labels[index]:
            can_ids, node_attack = graphs.window_nodes(index)
            attacked.append(frozenset(can_ids[node_attack].tolist()))
        else:
            attacked.append(frozenset())
    return AlertRecord(verdicts, labels, window_attack_names(graphs), attacked, np.asarray(graphs.attack_start))
