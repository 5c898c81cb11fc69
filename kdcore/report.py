"""``kdcore report``: compare every complete run under an experiment root, in tables and plots.

Reads only artifacts — each run's ``metrics.json`` (the numbers), ``scores.npz`` (every test
window's score and label) and ``logs/metrics.csv`` (training curves) — and writes, into the
report folder: ``runs.csv``, ``runs.json``, ``runs.md``, PNG plots and one ``report.md`` that
embeds them all.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchmetrics.functional.classification import binary_precision_recall_curve, binary_roc  # noqa: E402

from kdcore.atomic import atomic_open, atomic_write_text  # noqa: E402
from kdcore.errors import KdcoreError  # noqa: E402
from kdcore.seeds import across_seeds, kd_gains  # noqa: E402

COLUMNS = {  # key in the row → heading
    "dataset": "dataset",
    "seed": "seed",
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
TABLE_KEYS = (
    "dataset", "seed", "model", "model_size", "mode", "kd", "accuracy", "precision", "recall", "f1", "auroc", "fpr",
    "params", "checkpoint_bytes", "latency_ms_per_graph", "kd_gain_f1", "per_attack_recall",
)


def run_label(row: dict[str, Any]) -> str:
    kd = "" if row["kd"] == "-" else f" + {row['kd']}"
    seed = f" · seed {row['seed']}" if row.get("several_seeds") else ""  # a study over several seeds
    return f"{row['model']} {row['model_size']}{kd} ({row['mode']}){seed}"


def collect_runs(experiment_root: str | Path) -> list[dict[str, Any]]:
    """One row per complete run (a ``metrics.json`` written last), teachers before students,
    with ``kd_gain_f1`` = F1(student + KD) − F1(student without KD) of the same model, mode and seed."""
    root = Path(experiment_root)
    if not root.is_dir():
        raise KdcoreError(f"experiment root not found: {root}")
    rows = []
    for path in sorted(root.rglob("metrics.json")):
        metrics = json.loads(path.read_text())
        if "mode" in metrics and "f1" in metrics:
            rows.append({**metrics, "kd": metrics.get("strategy") or "-", "run_dir": str(path.parent)})
    size_order = {"teacher": 0, "student": 1}
    model_order = {"vgae": 0, "gat": 1, "dqn": 2}  # the study's order: detectors, then their fusion
    rows.sort(key=lambda r: (
        r["dataset"], model_order.get(r["model"], 3), r["model"], size_order.get(r["model_size"], 2), r["kd"] != "-", r["mode"],
        r.get("seed") or 0,
    ))
    several_seeds = len({r.get("seed") for r in rows}) > 1
    for row in rows:
        row["several_seeds"] = several_seeds
    plain_students = {(r["dataset"], r["model"], r["mode"], r.get("seed")): r["f1"] for r in rows
                      if r["model_size"] == "student" and r["kd"] == "-"}
    for row in rows:
        key = (row["dataset"], row["model"], row["mode"], row.get("seed"))
        if row["model_size"] == "student" and row["kd"] != "-" and key in plain_students:
            row["kd_gain_f1"] = row["f1"] - plain_students[key]
    return rows


def write_report(
    experiment_root: str | Path, out_dir: str | Path | None = None, rows: list[dict[str, Any]] | None = None
) -> Path:
    """Write the tables, plots and ``report.md``; returns the path of ``report.md``. ``rows``:
    what ``collect_runs`` already returned, so the artifacts are not scanned twice."""
    rows = collect_runs(experiment_root) if rows is None else rows
    if not rows:
        raise KdcoreError(f"no complete runs under {experiment_root} (a run is complete once its metrics.json exists)")
    out = Path(out_dir) if out_dir else Path(experiment_root) / "report"
    (out / "plots").mkdir(parents=True, exist_ok=True)
    table = [{key: row.get(key) for key in (*TABLE_KEYS, "run_dir")} for row in rows]
    atomic_write_text(out / "runs.json", json.dumps(table, indent=2) + "\n")
    atomic_write_text(out / "runs.csv", _csv(table))
    markdown_table = _markdown(rows)
    atomic_write_text(out / "runs.md", markdown_table)

    sections = ["# kdcore report", "", f"Runs under `{Path(experiment_root)}`.", "", markdown_table, *_seeds(rows, out)]
    for (dataset, model), group in _groups(rows):
        title = f"{dataset} · {model}"
        stem = f"{dataset}-{model}"
        sections += [f"## {title}", ""]
        for kind, draw in (("curves", _plot_curves), ("scores", _plot_scores), ("confusion", _plot_confusion),
                           ("classes", _plot_classes), ("training", _plot_training)):
            name = f"plots/{stem}-{kind}.png"
            if draw(group, out / name, title):
                sections += [f"![{title} {kind}]({name})", ""]
        sections += _per_test_set(group)
        attack_rows = [r for r in group if r.get("per_attack_recall")]
        if attack_rows:
            attacks = sorted({a for r in attack_rows for a in r["per_attack_recall"]})
            sections += ["Recall per attack:", "", "| run | " + " | ".join(attacks) + " |", "|---" * (len(attacks) + 1) + "|"]
            for r in attack_rows:
                sections.append(f"| {run_label(r)} | " + " | ".join(_fmt(r["per_attack_recall"].get(a)) for a in attacks) + " |")
            sections.append("")
        sections += _alerts(group)
    for dataset in sorted({row["dataset"] for row in rows}):
        name = f"plots/{dataset}-timeline.png"
        if _plot_timeline([row for row in rows if row["dataset"] == dataset], out / name, dataset):
            sections += [f"## {dataset} · incidents", "", f"![{dataset} incident timeline]({name})", ""]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(sections) + "\n")
    return report


def _seeds(rows: list[dict[str, Any]], out: Path) -> list[str]:
    """Markdown lines, and ``seeds.json``: mean ± std over seeds of every run repeated with several,
    and the KD gain against the seed-to-seed noise (``kdcore.seeds``)."""
    summary, gains = across_seeds(rows), kd_gains(rows)
    if not summary:
        return []
    atomic_write_text(out / "seeds.json", json.dumps({"across_seeds": summary, "kd_gains": gains}, indent=2) + "\n")
    shown = ("f1", "auroc", "fpr", "precision", "recall")
    lines = ["## Across seeds", "", "Mean ± standard deviation over the seeds (`seeds.json` has every metric, and every test set):", "",
             "| dataset | model | size | mode | KD | seeds | " + " | ".join(shown) + " |", "|---" * (6 + len(shown)) + "|"]
    for entry in summary:
        cells = [f"{entry[key]['mean']:.4f} ± {entry[key]['std']:.4f}" if entry[key]["mean"] is not None else "–" for key in shown]
        lines.append(f"| {entry['dataset']} | {entry['model']} | {entry['model_size']} | {entry['mode']} | {entry['kd']} | "
                     f"{', '.join(map(str, entry['seeds']))} | " + " | ".join(cells) + " |")
    if gains:
        lines += ["", "KD gain in F1 (student + KD − plain student, paired by seed; p: exact sign-flip test, two-sided):", "",
                  "| dataset | model | mode | KD | seeds | gain | p | more than noise |", "|---" * 8 + "|"]
        for gain in gains:
            lines.append(f"| {gain['dataset']} | {gain['model']} | {gain['mode']} | {gain['kd']} | {', '.join(map(str, gain['seeds']))} | "
                         f"{gain['mean']:+.4f} ± {gain['std']:.4f} | {gain['p_value']:.3f} | {'yes' if gain['exceeds_noise'] else 'no'} |")
    return ["", *lines, ""]


def _per_test_set(group: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: F1 · FPR · AUROC of every run on every test set, each on its own (an overall
    figure hides a test set the model fails on; AUROC is the ranking, whatever the threshold)."""
    names = sorted({name for row in group for name in row.get("test_sets", {})})
    if not names:
        return []
    lines = ["F1 · FPR · AUROC per test set:", "", "| run | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row in group:
        cells = []
        for name in names:
            metrics = row.get("test_sets", {}).get(name)
            cells.append(" · ".join(_fmt(metrics[key]) for key in ("f1", "fpr", "auroc")) if metrics else "–")
        lines.append(f"| {run_label(row)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _alerts(group: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: how each run's alerts localise the attacked IDs per attack (top-1 · top-3 of
    its detected attack windows), and how they merge into incidents."""
    judged = [row for row in group if row.get("localisation")]
    if not judged:
        return []
    attacks = sorted({attack for row in judged for attack in row["localisation"]["per_attack"]})
    lines = ["Localisation, top-1 · top-3 suspects naming an attacked ID, per attack:", "",
             "| run | " + " | ".join(attacks) + " |", "|---" * (len(attacks) + 1) + "|"]
    for row in judged:
        per_attack = row["localisation"]["per_attack"]
        lines.append(f"| {run_label(row)} | " + " | ".join(
            f"{_fmt(per_attack[a]['top1'])} · {_fmt(per_attack[a]['top3'])}" if a in per_attack else "–" for a in attacks) + " |")
    lines += ["", "Incidents (`kdcore detect`'s defaults):", "",
              "| run | bursts | found | per burst | delay (windows) | false | false/h | top-1 | class accuracy |", "|---" * 10 + "|"]
    for row in judged:
        incidents = row["incidents"]
        lines.append(f"| {run_label(row)} | " + " | ".join(_fmt(incidents[key]) for key in (
            "bursts", "detected_bursts", "incidents_per_burst_median", "time_to_detect_windows_median", "false_incidents",
            "false_incidents_per_hour")) + f" | {_fmt(incidents['localisation']['top1'])} | {_fmt(incidents.get('class_accuracy'))} |")
    return [*lines, ""]


def _groups(rows: list[dict[str, Any]]) -> Iterable[tuple[tuple[str, str], list[dict[str, Any]]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["model"]), []).append(row)
    return groups.items()


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _markdown(rows: list[dict[str, Any]]) -> str:
    keys = ("dataset", "seed", "model", "model_size", "mode", "kd", "accuracy", "precision", "recall", "f1", "auroc", "fpr",
            "params", "checkpoint_bytes", "latency_ms_per_graph", "kd_gain_f1")
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(row.get(key)) for key in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _csv(table: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]))
    writer.writeheader()
    for row in table:
        writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()})
    return buffer.getvalue()


def _window_scores(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    path = Path(row["run_dir"]) / "scores.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as arrays:
        scores = [arrays[k] for k in arrays.files if k.endswith("/score")]
        labels = [arrays[k] for k in arrays.files if k.endswith("/label")]
    if not scores:
        return None
    return np.concatenate(scores).astype(np.float64), np.concatenate(labels).astype(np.int64)


def _save(figure, path: Path) -> bool:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return True


def _plot_curves(group, path: Path, title: str) -> bool:
    """ROC and precision-recall curves of every run of one dataset and model."""
    figure, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(10, 4))
    drawn = False
    for row in group:
        found = _window_scores(row)
        if found is None or len(set(found[1].tolist())) < 2:
            continue
        scores, labels = torch.from_numpy(found[0]), torch.from_numpy(found[1])
        fpr, tpr, _ = binary_roc(scores, labels)
        precision, recall, _ = binary_precision_recall_curve(scores, labels)
        roc_axis.plot(fpr, tpr, label=f"{run_label(row)} · AUROC {row['auroc']:.3f}")
        pr_axis.plot(recall, precision, label=run_label(row))
        drawn = True
    if not drawn:
        plt.close(figure)
        return False
    roc_axis.set(title=f"ROC · {title}", xlabel="false positive rate", ylabel="true positive rate")
    pr_axis.set(title=f"Precision-recall · {title}", xlabel="recall", ylabel="precision")
    roc_axis.legend(fontsize=7, loc="lower right")
    pr_axis.legend(fontsize=7, loc="lower left")
    return _save(figure, path)


def _plot_scores(group, path: Path, title: str) -> bool:
    """Score distributions of normal and attack windows, one panel per run, with the threshold."""
    found = [(row, _window_scores(row)) for row in group]
    found = [(row, scores) for row, scores in found if scores is not None]
    if not found:
        return False
    figure, axes = plt.subplots(1, len(found), figsize=(4 * len(found), 3.2), squeeze=False)
    for axis, (row, (scores, labels)) in zip(axes[0], found):
        bins = np.histogram_bin_edges(scores, bins=40)
        axis.hist(scores[labels == 0], bins=bins, alpha=0.6, label="normal", density=True)
        axis.hist(scores[labels == 1], bins=bins, alpha=0.6, label="attack", density=True)
        with np.load(Path(row["run_dir"]) / "scores.npz", allow_pickle=False) as arrays:
            threshold = float(arrays["threshold"])
        if np.isfinite(threshold):
            axis.axvline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
        axis.set(title=run_label(row), xlabel="score")
        axis.title.set_fontsize(8)
        axis.legend(fontsize=7)
    figure.suptitle(f"Scores · {title}")
    return _save(figure, path)


def _plot_confusion(group, path: Path, title: str) -> bool:
    rows = [row for row in group if row.get("confusion_matrix")]
    if not rows:
        return False
    figure, axes = plt.subplots(1, len(rows), figsize=(3 * len(rows), 3), squeeze=False)
    for axis, row in zip(axes[0], rows):
        _matrix(axis, row["confusion_matrix"], ["normal", "attack"], ["normal", "attack"], "predicted", "true", run_label(row))
    figure.suptitle(f"Confusion matrices · {title}")
    return _save(figure, path)


def _plot_classes(group, path: Path, title: str) -> bool:
    """Attack class confusion matrices of the detected attack windows, one per run that has classes."""
    rows = [row for row in group if row.get("attack_classes")]
    if not rows:
        return False
    figure, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.4), squeeze=False)
    for axis, row in zip(axes[0], rows):
        report = row["attack_classes"]
        _matrix(axis, report["confusion_matrix"], report["classes"], report["true"], "predicted class", "true attack",
                f"{run_label(row)} · accuracy {_fmt(report['accuracy'])}")
        axis.set_xticklabels(report["classes"], rotation=45, ha="right")
    figure.suptitle(f"Attack classes · {title}")
    return _save(figure, path)


def _matrix(axis, matrix, columns: list[str], rows: list[str], xlabel: str, ylabel: str, title: str) -> None:
    """A confusion matrix drawn with its counts."""
    matrix = np.asarray(matrix)
    axis.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        axis.text(j, i, str(value), ha="center", va="center", fontsize=8)
    axis.set(xticks=range(len(columns)), yticks=range(len(rows)), xticklabels=columns, yticklabels=rows,
             xlabel=xlabel, ylabel=ylabel, title=title)
    axis.title.set_fontsize(8)


def _plot_timeline(rows: list[dict[str, Any]], path: Path, dataset: str) -> bool:
    """One test set of the dataset (its first) over time: attack windows shaded, each run's
    incidents drawn as bars, labelled with their top suspect."""
    found = []
    for row in rows:
        listed = row.get("test_sets", {})
        names = sorted(name for name, metrics in listed.items() if "incidents" in metrics)
        scores = Path(row["run_dir"]) / "scores.npz"
        if names and scores.is_file():
            found.append((row, names[0], scores))
    if not found:
        return False
    test_set = found[0][1]
    found = [(row, scores) for row, name, scores in found if name == test_set]
    with np.load(found[0][1], allow_pickle=False) as arrays:
        if f"{test_set}/start" not in arrays.files:
            return False
        start, label = arrays[f"{test_set}/start"], arrays[f"{test_set}/label"]
    figure, axis = plt.subplots(figsize=(11, 0.5 * len(found) + 1.4))
    step = float(np.median(np.diff(start))) if len(start) > 1 else 1.0
    attack = np.flatnonzero(label == 1)
    for burst in np.split(attack, np.flatnonzero(np.diff(attack) > 1) + 1) if len(attack) else []:
        axis.axvspan(start[burst[0]], start[burst[-1]] + step, color="tab:red", alpha=0.15, linewidth=0)
    for y, (row, _) in enumerate(found):
        for incident in row["test_sets"][test_set]["incidents"]["listed"]:
            axis.plot([incident["start"], incident["end"]], [y, y], linewidth=6, solid_capstyle="butt", color="tab:blue")
            if incident["suspects"]:
                axis.text(incident["start"], y + 0.22, incident["suspects"][0]["can_id"], fontsize=6)
    units = {incident["unit"] for row, _ in found for incident in row["test_sets"][test_set]["incidents"]["listed"]}
    axis.set(yticks=range(len(found)), ylim=(-0.6, len(found) - 0.2), xlabel="frame" if units == {"frame"} else "time (s)",
             title=f"Incidents · {dataset} · {test_set} (attack windows shaded, bars: incidents, label: top suspect)")
    axis.set_yticklabels([run_label(row) for row, _ in found], fontsize=7)
    axis.title.set_fontsize(9)
    return _save(figure, path)


def _plot_training(group, path: Path, title: str) -> bool:
    """Training and validation loss per epoch (and the KD loss where there is one)."""
    curves = []
    for row in group:
        log = Path(row["run_dir"]) / "logs" / "metrics.csv"
        if log.is_file():
            curves.append((row, list(csv.DictReader(log.open()))))
    if not curves:
        return False
    figure, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), squeeze=False)
    for axis, (row, records) in zip(axes[0], curves):
        for column in ("train_loss", "val_loss", "kd_loss"):
            by_epoch: dict[int, list[float]] = {}
            for record in records:
                if record.get(column) and record.get("epoch"):
                    by_epoch.setdefault(int(float(record["epoch"])), []).append(float(record[column]))
            if by_epoch:
                epochs = sorted(by_epoch)
                axis.plot(epochs, [np.mean(by_epoch[e]) for e in epochs], marker="o", markersize=3, label=column)
        axis.set(title=run_label(row), xlabel="epoch", ylabel="loss")
        axis.title.set_fontsize(8)
        axis.legend(fontsize=7)
    figure.suptitle(f"Training · {title}")
    return _save(figure, path)
