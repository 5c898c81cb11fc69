"""Datasets read from disk: the ctt layout, single captures, splits, and what is saved with a model."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kdcore.checkpoint import load_checkpoint
from kdcore.cli import app
from kdcore.data.formats.writers import write_csv
from kdcore.errors import KdcoreError, TeacherError

from conftest import tiny_capture, tiny_config


def test_ctt_layout_trains_and_reports_each_test_folder(engine, ctt_root, tmp_path):
    config = tiny_config(tmp_path / "exp", dataset="hcrl_sa", data_root=str(ctt_root), mode="normal", max_epochs=2)
    result = engine.run(config)
    assert set(result.metrics["test_sets"]) == {"test_01_dos", "test_02_fuzzy"}
    assert result.metrics["test_sets"]["test_01_dos"]["windows"] == 20
    assert result.metrics["windows"] == 40
    assert "/automotive/hcrl_sa/supervised/gat/teacher/no-kd/normal" in str(result.run_dir)

    data = load_checkpoint(result.checkpoint).extra["data"]
    assert data["window_size"] == 50 and len(data["preprocessing"]["vocabulary"]) == 12


def test_splits_are_time_ordered_and_disjoint(engine, ctt_root, tmp_path):
    config = tiny_config(tmp_path / "exp", dataset="hcrl_sa", data_root=str(ctt_root), val_fraction=0.2)
    splits = engine.datasets.get("hcrl_sa")(config).load_splits()
    train, val = splits.train, splits.val
    # Each train file gives its first 80% of frames to training and the rest to validation.
    assert len(train) == 2 * 32 and len(val) == 2 * 8
    for file in range(2):
        last_train = train.time_span[32 * file + 31, 1]
        first_val = val.time_span[8 * file, 0]
        assert last_train < first_val


def test_training_windows_may_overlap(engine, ctt_root, tmp_path):
    """``train_window_stride``: training windows start that many frames apart; validation and test
    windows, judged as ``detect`` cuts a stream, ``window_stride`` apart. Saved with the data only
    where it differs, so models trained before it keep their data state."""
    config = tiny_config(tmp_path / "exp", dataset="hcrl_sa", data_root=str(ctt_root), val_fraction=0.2, train_window_stride=25)
    splits = engine.datasets.get("hcrl_sa")(config).load_splits()
    assert (len(splits.train), len(splits.val), len(splits.tests["test_01_dos"])) == (2 * 63, 2 * 8, 20)  # 1 600 training frames a file
    starts, ends = splits.train.time_span[:63, 0], splits.train.time_span[:63, 1]
    assert bool((starts[1:] < ends[:-1]).all()), "each training window overlaps the next"
    assert bool((splits.val.time_span[1:8, 0] > splits.val.time_span[:7, 1]).all()), "validation windows do not"
    assert splits.state["train_window_stride"] == 25
    plain = tiny_config(tmp_path / "exp", dataset="hcrl_sa", data_root=str(ctt_root), val_fraction=0.2)
    assert "train_window_stride" not in engine.datasets.get("hcrl_sa")(plain).load_splits().state

    arguments = ["data", "build", str(ctt_root), "--window", "50", "--stride", "50", "--train-stride", "25", "--val-fraction", "0.2",
                 "--cache-dir", str(tmp_path / "exp" / "cache" / "graphs"), "--json"]
    built = json.loads(CliRunner().invoke(app, arguments).stdout)
    assert (built["graphs"], built["cache_hits"]) == (2 * 63 + 2 * 8 + 2 * 20, 6), "data build cuts the parts the run read"


def test_a_second_run_reads_the_graph_cache(engine, ctt_root, tmp_path):
    config = tiny_config(tmp_path / "exp", dataset="hcrl_sa", data_root=str(ctt_root))
    engine.datasets.get("hcrl_sa")(config).load_splits()
    cached = sorted((tmp_path / "exp" / "cache" / "graphs").glob("*.npz"))
    assert len(cached) == 6  # 2 train files × (train, val) + 2 test files
    mtimes = [p.stat().st_mtime_ns for p in cached]
    engine.datasets.get("hcrl_sa")(config).load_splits()
    assert [p.stat().st_mtime_ns for p in cached] == mtimes


def test_a_single_capture_is_split_in_time_order(engine, tmp_path):
    path = tmp_path / "capture.csv"
    write_csv(tiny_capture(np.random.default_rng(1), 5000, "dos"), path)
    config = tiny_config(tmp_path / "exp", dataset="captures", data_root=str(path))
    splits = engine.datasets.get("captures")(config).load_splits()
    assert (len(splits.train), len(splits.val), len(splits.tests["test"])) == (70, 15, 15)


def test_standard_dataset_needs_a_data_root_in_ctt_layout(engine, tmp_path):
    with pytest.raises(KdcoreError, match="needs --data-root"):
        engine.datasets.get("hcrl_ch")(tiny_config(tmp_path, dataset="hcrl_ch")).load_splits()
    flat = tmp_path / "flat"
    flat.mkdir()
    write_csv(tiny_capture(np.random.default_rng(1), 500), flat / "x.csv")
    with pytest.raises(KdcoreError, match="expects the can-train-and-test layout"):
        engine.datasets.get("hcrl_ch")(tiny_config(tmp_path, dataset="hcrl_ch", data_root=str(flat))).load_splits()


def test_a_teacher_trained_on_other_data_is_refused(engine, ctt_root, teacher_root, tmp_path):
    tiny_teacher = teacher_root / "automotive/tiny/supervised/gat/teacher/no-kd/curriculum/models/gat_curriculum.pth"
    config = tiny_config(tmp_path / "exp", dataset="hcrl_sa", data_root=str(ctt_root), window_size=40, window_stride=40,
                         model_size="student", use_knowledge_distillation=True, teacher_model_path=str(tiny_teacher))
    with pytest.raises(TeacherError, match="trained on other data"):
        engine.run(config)


def test_data_inspect_and_build_commands(engine, ctt_root, tmp_path):
    runner = CliRunner()
    inspected = runner.invoke(app, ["data", "inspect", str(ctt_root), "--json"])
    assert inspected.exit_code == 0, inspected.output
    summary = json.loads(inspected.stdout)
    assert summary["format"] == "ctt" and summary["files"] == 4 and summary["rows"] == 6000
    assert summary["attack_rows"] + summary["normal_rows"] == summary["rows"] > summary["attack_rows"] > 0
    assert summary["distinct_ids"] >= 12 and summary["bad_rows"] == 0
    assert 0.0 <= summary["shared_stamps"] < 0.01  # every frame its own stamp, to the µs a CSV keeps

    arguments = ["data", "build", str(ctt_root), "--window", "50", "--stride", "50", "--cache-dir", str(tmp_path / "cache"), "--json"]
    first = json.loads(runner.invoke(app, arguments).stdout)
    assert (first["graphs"], first["frames"], first["cache_hits"]) == (120, 6000, 0)
    second = json.loads(runner.invoke(app, arguments).stdout)
    assert (second["files"], second["parts"], second["cache_hits"], second["graphs"]) == (4, 6, 6, 120)

    # A run over the dataset finds every part it reads already built.
    entries = sorted((tmp_path / "cache").iterdir())
    engine.run(tiny_config(tmp_path / "exp", dataset="hcrl_sa", data_root=str(ctt_root), cache_dir=str(tmp_path / "cache")))
    assert sorted((tmp_path / "cache").iterdir()) == entries


def test_data_inspect_counts_or_stops_at_bad_rows(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,arbitration_id,data_field,attack\n1.0,1F3,0011,0\n2.0,XYZ,00,0\n3.0,1F4,00,1\n")
    runner = CliRunner()
    counted = json.loads(runner.invoke(app, ["data", "inspect", str(path), "--json"]).stdout)
    assert (counted["rows"], counted["bad_rows"], counted["attack_rows"]) == (2, 1, 1)
    assert counted["first_bad_row"] == f"{path}:3: arbitration_id: not a hex CAN ID: 'XYZ'"
    refused = runner.invoke(app, ["data", "inspect", str(path), "--on-bad-rows", "error"])
    assert refused.exit_code == 2
    assert refused.stderr.strip() == f"error: {path}:3: arbitration_id: not a hex CAN ID: 'XYZ'"
