"""Datasets from collections of real attack captures: how a capture is cut, and a teacher and a
KD student trained on the ROAD and J1939 collections with metrics per attack type.

The scenario tests read ``../shared/data/real`` and skip with a reason without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdcore import Engine, RunConfig
from kdcore.data.formats.writers import write_csv
from kdcore.data.real import TEST_SHARE, AttackCapturesDataset, attack_parts
from kdcore.errors import KdcoreError

from conftest import tiny_capture

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is not present: the real attack collections are read from the shared data folder")


def test_an_attack_capture_is_cut_in_time_order_on_window_boundaries():
    label = np.zeros(10_000, np.uint8)
    label[6_050:8_020:7] = 1  # one attack span, frames 6050-8015
    parts = attack_parts(label, window=100, val=0.15)
    assert [split for split, *_ in parts] == ["train", "val", "train", "val", "train", "val", "train", "test"]
    assert [first for _, first, _ in parts] == [0, *[end for *_, end in parts[:-1]]]  # contiguous, in order
    assert parts[-1][2] == 10_000 and all(first % 100 == 0 for _, first, _ in parts)
    a, b = 6_000, 8_100  # the window boundaries around the attack
    prefix_val = [(first, min(end, a)) for split, first, end in parts if split == "val"]
    assert [end for _, end in prefix_val] == [2_000, 4_000, 6_000], "each third of the prefix ends in validation"
    assert sum(end - first for first, end in prefix_val) == 0.15 * a  # most of the attack-free prefix trains
    test_first = parts[-1][1]
    assert test_first == round((a + (1 - TEST_SHARE) * (b - a)) / 100) * 100
    for split, first, end in parts[-3:]:  # validation, training and test all see the attack
        assert label[first:end].any(), split


def test_an_attack_at_a_captures_start_leaves_no_prefix_to_validate_on():
    label = np.zeros(1_000, np.uint8)
    label[:600] = 1
    assert attack_parts(label, window=100, val=0.15) == [("val", 0, 100), ("train", 100, 400), ("test", 400, 1_000)]


def test_a_capture_without_attacks_trains_and_validates():
    assert attack_parts(np.zeros(1_000, np.uint8), window=100, val=0.2) == [("train", 0, 800), ("val", 800, 1_000)]


def write_attack_capture(path: Path, seed: int, attack: str, frames: int = 3_000) -> None:
    """Normal traffic with the tiny vehicle's attack bursts in its middle third only."""
    rng = np.random.default_rng(seed)
    normal, attacked = tiny_capture(rng, frames), tiny_capture(rng, frames, attack)
    middle = slice(frames // 3, 2 * frames // 3)
    table = normal.take(np.arange(frames))
    for column in ("can_id", "payload", "label", "attack_type"):
        getattr(table, column)[middle] = getattr(attacked, column)[middle]
    write_csv(table, path)


def test_the_dataset_cuts_every_capture_and_holds_out_test_folders(tmp_path):
    root = tmp_path / "collection"
    write_attack_capture(root / "dos-drive.csv", 1, "dos")
    write_attack_capture(root / "fuzzy-drive.csv", 2, "fuzzy")
    write_attack_capture(root / "test_09_unseen" / "fuzzy-other.csv", 3, "fuzzy")
    config = RunConfig(dataset="attack-captures", data_root=str(root), experiment_root=str(tmp_path / "exp"),
                       window_size=50, window_stride=50, progress_bar=False)
    splits = AttackCapturesDataset(config).load_splits()
    assert sorted(splits.tests) == ["test_09_unseen", "test_dos", "test_fuzzy"]
    for name, graphs in {"train": splits.train, "val": splits.val, **splits.tests}.items():
        labels = graphs.labels.numpy()
        assert 0 < labels.sum() < len(labels), name  # both classes everywhere
    assert len(splits.tests["test_09_unseen"]) == 3_000 // 50  # held out whole


def test_a_folder_with_only_held_out_captures_is_refused(tmp_path):
    write_attack_capture(tmp_path / "test_01_x" / "dos-a.csv", 1, "dos")
    config = RunConfig(dataset="attack-captures", data_root=str(tmp_path), experiment_root=str(tmp_path / "exp"))
    with pytest.raises(KdcoreError, match="no captures to train on"):
        AttackCapturesDataset(config).load_splits()


# --- the real collections ---------------------------------------------------------------------------


def train_teacher_and_kd_student(dataset: str, data_root: Path, root: Path, **settings) -> dict[str, dict]:
    engine = Engine(load_entry_points=False)
    common = dict(dataset=dataset, data_root=str(data_root), experiment_root=str(root), mode="normal", max_epochs=2,
                  progress_bar=False, **settings)
    teacher = engine.run(RunConfig(**common)).metrics
    student = engine.run(RunConfig(**common, model_size="student", use_knowledge_distillation=True)).metrics
    assert student["distillation"] == "with-kd" and student["strategy"] == "gat-attribution"
    return {"teacher": teacher, "student": student}


def assert_per_attack_metrics(metrics: dict, attacks: set[str]) -> None:
    """metrics.json holds one test set per attack, each with its recall under the attack's name."""
    assert {f"test_{attack}" for attack in attacks} <= set(metrics["test_sets"])
    for attack in attacks:
        test_set = metrics["test_sets"][f"test_{attack}"]
        assert set(test_set["per_attack_recall"]) == {attack}
        assert 0.0 <= test_set["per_attack_recall"][attack] <= 1.0
        assert test_set["attack_windows"] > 0 and test_set["windows"] > test_set["attack_windows"]
    assert attacks <= set(metrics["per_attack_recall"])


@needs_real
def test_road_teacher_and_kd_student_report_every_masquerade(tmp_path):
    runs = train_teacher_and_kd_student("road", REAL / "road-statgraph", tmp_path)
    attacks = {"correlated_signal", "max_engine_coolant_temp", "reverse_light_off", "reverse_light_on"}
    for metrics in runs.values():
        assert_per_attack_metrics(metrics, attacks)


@needs_real
def test_j1939_teacher_and_kd_student_report_tsc1_and_dos(tmp_path):
    runs = train_teacher_and_kd_student("j1939", REAL / "j1939-systemscyber", tmp_path)
    for metrics in runs.values():
        assert_per_attack_metrics(metrics, {"high_torque_command", "dos"})
