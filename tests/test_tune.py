"""``kdcore tune``: Optuna trials judged on validation, shared through one storage, and a best config that reproduces its trial."""

import subprocess
import sys

import optuna
import pytest

from kdcore.config import ConfigError, load_config
from kdcore.tune import BestValLoss, parse_space

ARGS = ["--mode", "normal", "--model-size", "student", "--set", "max_epochs=2", "--set", "window_size=50",
        "--set", "window_stride=50", "--set", "batch_size=16"]


def test_a_search_space_names_config_keys_with_sound_ranges():
    space = parse_space({"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                         "window_size": {"type": "categorical", "choices": [50, 100]}}, "space.toml")
    assert [(p.name, p.kind, p.log) for p in space] == [("learning_rate", "float", True), ("window_size", "categorical", False)]
    for table, message in [({"learning_rat": {"type": "float", "low": 0, "high": 1}}, "'learning_rat' is not a config key"),
                           ({"learning_rate": {"type": "uniform"}}, "needs type = one of float, int, categorical"),
                           ({"learning_rate": {"type": "float", "low": 1, "high": 1}}, "needs numbers low < high"),
                           ({"window_size": {"type": "categorical", "choices": []}}, "needs a non-empty choices list"),
                           ({"experiment_root": {"type": "categorical", "choices": ["a"]}}, "set by kdcore tune itself"),
                           ({}, "the search space is empty")]:
        with pytest.raises(ConfigError, match=message):
            parse_space(table, "space.toml")


def test_two_workers_share_one_study_and_the_best_config_reproduces_its_trial(engine, teacher_root, tmp_path):
    data = teacher_root / "data" / "tiny"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    command = [sys.executable, "-m", "kdcore", "tune", *ARGS, "--dataset", "captures", "--data-root", str(data),
               "--experiment-root", str(tmp_path / "runs"), "--trials", "4", "--storage", storage, "--study", "shared"]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), [err[-2000:] for _, err in outputs]

    study = optuna.load_study(study_name="shared", storage=storage)
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)), "no trial run twice"
    values = [t.params["learning_rate"] for t in study.trials]
    assert len(values) == len(set(values)), "workers seeded alike drew the same values"
    assert 4 <= len(finished) <= 5  # the two workers stop at 4; one may have started a trial as the other finished the 4th
    assert {(tmp_path / "runs" / "tune" / "shared" / f"trial-{t.number}").is_dir() for t in finished} == {True}

    best = load_config(tmp_path / "runs" / "tune" / "shared" / "best.toml")
    assert best.learning_rate == study.best_trial.params["learning_rate"] and best.experiment_root == str(tmp_path / "runs")
    recorder = BestValLoss()
    engine.run(best, callbacks=[recorder])
    assert recorder.value == pytest.approx(study.best_value, rel=1e-6), "the best config trains to its trial's validation loss"
    assert (tmp_path / "runs" / "tune" / "shared" / "report" / "history.png").is_file()


def test_without_a_teacher_tune_fails_before_any_trial(teacher_root, tmp_path):
    result = subprocess.run([sys.executable, "-m", "kdcore", "tune", *ARGS, "--kd", "gat-softlabel", "--dataset", "captures",
                             "--data-root", str(teacher_root / "data" / "tiny"), "--experiment-root", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "no teacher found" in result.stderr and not (tmp_path / "tune" / "optuna.db").exists()


def test_a_study_whose_every_run_fails_says_so(engine, tmp_path, monkeypatch):
    from conftest import tiny_config
    from kdcore.errors import KdcoreError
    from kdcore.tune import default_space, tune

    def failing(config, callbacks=()):
        raise KdcoreError("train_loss is nan at step 3")

    monkeypatch.setattr(engine, "run", failing)
    base = tiny_config(tmp_path, mode="normal", model_size="student")
    with pytest.raises(KdcoreError, match=r"study broken: no trial completed \(2 pruned or failed"):
        tune(engine, base, default_space(base), 2, f"sqlite:///{tmp_path / 'optuna.db'}", "broken")
    trials = optuna.load_study(study_name="broken", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
