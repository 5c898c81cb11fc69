"""``kdcore evaluate``: a trained model scored on labelled captures, with a run's metrics per test set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kdcore.cli import app
from kdcore.data.formats import read_capture
from kdcore.detect import Detector
from kdcore.evaluate import evaluate, find_test_sets
from kdcore.errors import KdcoreError

GAT = "automotive/tiny/supervised/gat/teacher/no-kd/normal"
VGAE = "automotive/tiny/unsupervised/vgae/teacher/no-kd/autoencoder"
KEYS = ("f1", "precision", "recall", "fpr", "accuracy", "windows", "attack_windows", "confusion_matrix", "per_attack_recall")


@pytest.mark.parametrize(("run", "checkpoint"), [(GAT, "gat_normal.pth"), (VGAE, "vgae_autoencoder.pth")])
def test_a_dataset_folder_scores_as_the_run_scored_its_test_sets(engine, teacher_root, run, checkpoint):
    detector = Detector(teacher_root / run / "models" / checkpoint, engine=engine)
    metrics, windows = evaluate(detector, [teacher_root / "data" / "tiny"])
    trained = json.loads((teacher_root / run / "metrics.json").read_text())
    assert set(metrics["test_sets"]) == set(trained["test_sets"]) == {"test_01_dos", "test_02_fuzzy"}
    for name, test_set in trained["test_sets"].items():
        assert {key: metrics["test_sets"][name][key] for key in KEYS} == {key: test_set[key] for key in KEYS}, name
        assert metrics["test_sets"][name]["auroc"] == pytest.approx(test_set["auroc"], abs=1e-6)
        assert len(windows[name]["score"]) == test_set["windows"]
    assert metrics["f1"] == pytest.approx(trained["f1"]) and metrics["threshold"] == detector.threshold


@pytest.mark.parametrize(("run", "checkpoint"), [(GAT, "gat_normal.pth"), (VGAE, "vgae_autoencoder.pth")])
def test_alerts_are_judged_by_localisation_and_incidents(engine, teacher_root, run, checkpoint):
    detector = Detector(teacher_root / run / "models" / checkpoint, engine=engine)
    metrics, _ = evaluate(detector, [teacher_root / "data" / "tiny" / "test_01_dos"])
    dos = metrics["test_sets"]["dos.csv"]
    (tn, fp), (fn, tp) = dos["confusion_matrix"]
    assert dos["localisation"]["count"] == tp > 0  # every detected attack window is judged
    assert dos["localisation"]["top1"] >= 0.9 and dos["localisation"]["per_attack"]["dos"]["count"] == tp
    incidents = dos["incidents"]
    assert incidents["bursts"] == incidents["detected_bursts"] == 1  # the tiny test capture opens with one DoS burst
    assert incidents["incidents_per_burst_median"] == 1.0 and incidents["time_to_detect_windows_median"] <= 2
    assert incidents["localisation"]["top1"] == 1.0 and incidents["normal_hours"] > 0
    assert metrics["incidents"]["bursts"] == incidents["bursts"]  # one capture: the overall figures are its own
    classes = dos["attack_classes"]  # trained on DoS alone: every detected DoS window is DoS, or unknown at worst
    assert classes["classes"] == ["dos", "unknown"] and sum(classes["confusion_matrix"][0]) == tp and classes["accuracy"] >= 0.8


def test_every_capture_is_a_test_set_and_a_layout_reads_any_text(engine, teacher_root, tmp_path):
    dos = teacher_root / "data" / "tiny" / "test_01_dos" / "dos.csv"
    table = read_capture(dos)
    tsv = tmp_path / "trip" / "dos.tsv"
    tsv.parent.mkdir()
    tsv.write_text("".join(f"{t:.6f}\t{i:X}\t{bytes(p[:d]).hex()}\t{'yes' if y else 'no'}\n"
                           for t, i, d, p, y in zip(table.timestamp, table.can_id, table.dlc, table.payload, table.label)))
    layout = tmp_path / "trip.toml"
    layout.write_text('delimiter = "\\t"\n[timestamp]\ncolumn = 0\n[can_id]\ncolumn = 1\n[payload]\ncolumn = 2\n'
                      '[label]\ncolumn = 3\nnormal = ["no"]\nattack_names = "file"\n')
    runner = CliRunner()
    model = str(teacher_root / GAT / "models" / "gat_normal.pth")
    from_csv = runner.invoke(app, ["evaluate", model, str(dos), "--json"])
    from_tsv = runner.invoke(app, ["evaluate", model, str(tsv.parent), "--layout", str(layout), "--json", "--out", str(tmp_path / "out")])
    assert from_csv.exit_code == 0 and from_tsv.exit_code == 0, from_tsv.output
    csv_metrics, tsv_metrics = json.loads(from_csv.stdout), json.loads(from_tsv.stdout)  # stdout holds only the JSON
    assert list(csv_metrics["test_sets"]) == ["dos.csv"] and list(tsv_metrics["test_sets"]) == ["dos.tsv"]
    assert {key: csv_metrics[key] for key in KEYS} == {key: tsv_metrics[key] for key in KEYS}
    assert csv_metrics["model"] == "gat" and csv_metrics["trained_on"] == "tiny"

    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == tsv_metrics
    with np.load(tmp_path / "out" / "scores.npz") as scores:
        assert len(scores["dos.tsv/score"]) == tsv_metrics["windows"] and float(scores["threshold"]) == tsv_metrics["threshold"]


def test_test_sets_are_named_and_clashes_refused(teacher_root, tmp_path):
    root = teacher_root / "data" / "tiny"
    assert sorted(find_test_sets([root])) == ["test_01_dos", "test_02_fuzzy"]
    assert sorted(find_test_sets([root / "test_01_dos"])) == ["dos.csv"]
    with pytest.raises(KdcoreError, match="two test sets named 'test_01_dos'"):
        find_test_sets([root, root])
    with pytest.raises(KdcoreError, match="data not found"):
        find_test_sets([tmp_path / "missing"])


def test_bad_input_is_one_line(teacher_root, tmp_path):
    runner = CliRunner()
    not_a_model = runner.invoke(app, ["evaluate", str(teacher_root / "data" / "tiny" / "test_01_dos" / "dos.csv"), str(tmp_path)])
    assert not_a_model.exit_code == 2 and not_a_model.stderr.startswith("error: ") and len(not_a_model.stderr.strip().splitlines()) == 1
    short = tmp_path / "short.csv"
    short.write_text("timestamp,arbitration_id,data_field,attack\n0.1,123,00,0\n")
    model = str(teacher_root / GAT / "models" / "gat_normal.pth")
    too_short = runner.invoke(app, ["evaluate", model, str(short)])
    assert too_short.exit_code == 2 and "too few frames for a single window" in too_short.stderr


def test_the_incident_settings_are_detects(teacher_root):
    model, dos = str(teacher_root / GAT / "models" / "gat_normal.pth"), str(teacher_root / "data" / "tiny" / "test_01_dos")
    runner = CliRunner()
    default = json.loads(runner.invoke(app, ["evaluate", model, dos, "--json"]).stdout)["incidents"]
    strict, alone = (json.loads(runner.invoke(app, ["evaluate", model, dos, "--json", "--open-after", "50", "--sure-margin", margin]).stdout)["incidents"]
                     for margin in ("inf", "0"))
    assert default["detected_bursts"] == 1 and strict["detected_bursts"] == 0  # the burst is 6 windows: never 50 in a row
    assert alone["detected_bursts"] == 1  # ... but any alerting window is at least 0 spreads above the threshold
    assert strict["listed"] == [] and strict["bursts"] == default["bursts"] == 1
