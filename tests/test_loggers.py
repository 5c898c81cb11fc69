"""The ``loggers`` key: TensorBoard and MLflow beside the CSV log, tagged so runs group; the CSV
log and ``kdcore report`` keep working from the artifact folders alone."""

from __future__ import annotations

import struct
import sys
from types import SimpleNamespace

import pytest
from conftest import tiny_config
from typer.testing import CliRunner

from kdcore.cli import app
from kdcore.config import RunConfig, load_config, parse_override
from kdcore.errors import ConfigError
from kdcore.layout import run_layout

pytest.importorskip("tensorboardX")
pytest.importorskip("mlflow")
pytestmark = pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning")  # mlflow's SQLAlchemy use

TEACHER_TAGS = {"mode": "autoencoder", "model": "vgae", "model_size": "teacher", "kd": "none", "dataset": "tiny", "seed": "42"}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, engine):
    """A teacher logged to CSV, TensorBoard and the default MLflow store, and a KD student logged
    to an MLflow store named by ``tracking_uri``."""
    root = tmp_path_factory.mktemp("tracked")
    shared = root.parent / f"{root.name}-shared.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # MLflow sets it for the process; put it back after
        teacher = engine.run(tiny_config(root, mode="autoencoder", max_epochs=2, loggers=("csv", "tensorboard", "mlflow")))
        student = engine.run(tiny_config(
            root, mode="autoencoder", model_size="student", use_knowledge_distillation=True, loggers=("mlflow",),
            tracking_uri=f"sqlite:///{shared}", seed=7,
        ))
    return SimpleNamespace(root=root, shared=shared, teacher=teacher, student=student)


def read_events(folder):
    """Every event in a TensorBoard folder (TFRecord: length, its CRC, the record, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            events.append(Event.FromString(data[offset + 12:offset + 12 + length]))
            offset += 12 + length + 4
    return events


def scalars(events) -> dict[str, list[int]]:
    steps: dict[str, list[int]] = {}
    for event in events:
        for value in event.summary.value:
            if value.WhichOneof("value") == "simple_value":
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def hparams(events) -> dict[str, str]:
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    for event in events:
        for value in event.summary.value:
            if value.tag == "_hparams_/session_start_info":
                info = HParamsPluginData.FromString(value.metadata.plugin_data.content).session_start_info
                return {key: item.string_value or str(item.number_value) for key, item in info.hparams.items()}
    return {}


def mlflow_runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, runs


def test_tensorboard_gets_the_curves_and_tags_beside_the_csv_log(tracked):
    logs = tracked.teacher.layout.logs
    assert (logs / "metrics.csv").read_text().startswith("epoch,")
    events = read_events(logs / "tensorboard")
    steps = scalars(events)
    assert len(steps["val_loss"]) == 2 and len(steps["train_loss_epoch"]) == 2
    tags = hparams(events)
    assert {key: tags[key] for key in TEACHER_TAGS} == TEACHER_TAGS
    assert tags["run_dir"] == str(tracked.teacher.run_dir)
    assert tags["learning_rate"] == "0.005"  # the whole config, to compare runs by


def test_mlflow_runs_are_tagged_in_the_default_and_the_given_store(tracked):
    client, (teacher,) = mlflow_runs(f"sqlite:///{tracked.root / 'mlflow.db'}", "tiny")
    assert {key: teacher.data.tags[key] for key in TEACHER_TAGS} == TEACHER_TAGS
    assert teacher.info.run_name == "automotive/tiny/unsupervised/vgae/teacher/no-kd/autoencoder"
    assert teacher.info.status == "FINISHED"
    assert len(client.get_metric_history(teacher.info.run_id, "val_loss")) == 2  # one per epoch
    assert teacher.data.params["max_epochs"] == "2"

    _, (student,) = mlflow_runs(f"sqlite:///{tracked.shared}", "tiny")
    assert student.data.tags["kd"] == "vgae-dual-signal"
    assert (student.data.tags["model_size"], student.data.tags["seed"]) == ("student", "7")
    assert student.data.tags["run_dir"] == str(tracked.student.run_dir)


def test_report_still_reads_the_artifact_folders(tracked, tmp_path):
    result = CliRunner().invoke(app, ["report", "--experiment-root", str(tracked.root), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "plots" / "tiny-vgae-training.png").is_file()


def test_fusion_history_goes_to_the_trackers(tmp_path, monkeypatch):
    """Fusion trains without Lightning's Trainer; its epoch rows reach the trackers all the same."""
    from kdcore.tracking import log_history

    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")  # MLflow's own setting, left by an earlier run
    config = RunConfig(experiment_root=str(tmp_path), mode="fusion", model="dqn", loggers=("tensorboard", "mlflow"))
    run = SimpleNamespace(config=config, layout=run_layout(config, model="dqn", learning_type="reinforcement"))
    log_history(run, [{"epoch": 0, "step": 40, "train_loss": 0.5, "val_f1": 0.7},
                      {"epoch": 1, "step": 80, "train_loss": 0.4, "val_f1": 0.8}])
    assert scalars(read_events(run.layout.logs / "tensorboard"))["val_f1"] == [40, 80]
    client, (logged,) = mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "synthetic")
    assert [(m.step, m.value) for m in client.get_metric_history(logged.info.run_id, "val_f1")] == [(40, 0.7), (80, 0.8)]
    assert (logged.data.tags["mode"], logged.data.tags["kd"], logged.info.status) == ("fusion", "none", "FINISHED")
    assert not elsewhere.exists()


def test_loggers_from_the_command_line_and_toml():
    assert load_config(overrides=dict([parse_override("loggers=csv,tensorboard")])).loggers == ("csv", "tensorboard")
    assert load_config(overrides=dict([parse_override('loggers=["mlflow"]')])).loggers == ("mlflow",)
    assert RunConfig().loggers == ("csv",)


def test_unknown_logger_is_one_line_before_anything_runs(tmp_path):
    result = CliRunner().invoke(app, ["run", "--set", "loggers=csv,tensorbaord", "--experiment-root", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: the command line: loggers takes names among csv, tensorboard, mlflow, got 'tensorbaord'; did you mean 'tensorboard'?"
    )
    with pytest.raises(ConfigError, match="expected a list of names"):
        load_config(overrides={"loggers": 3})


def test_a_missing_package_stops_the_run_before_it_reads_data(engine, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails, find_spec finds nothing
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ConfigError, match=r"^logger 'tensorboard' needs the tensorboardX package: pip install 'kdcore\[tracking\]'$"):
        engine.run(tiny_config(tmp_path, loggers=("tensorboard",)))
    assert not any(tmp_path.iterdir())

    monkeypatch.setitem(sys.modules, "alembic", None)
    with pytest.raises(ConfigError, match=r"sqlite MLflow store needs the alembic package"):
        engine.plan(tiny_config(tmp_path, loggers=("mlflow",)))
    engine.plan(tiny_config(tmp_path, loggers=("mlflow",), tracking_uri="http://127.0.0.1:5000"))  # a server: no SQL packages here


def test_every_seed_of_a_study_logs_to_one_mlflow_store(tmp_path):
    from kdcore.pipeline import study_stages

    stages = study_stages(tiny_config(tmp_path, loggers="csv,mlflow", seeds=[1, 2]), ["tiny"])
    uris = {s.config.tracking_uri for s in stages if s.config is not None}
    roots = {s.config.experiment_root for s in stages if s.config is not None}
    assert uris == {f"sqlite:///{(tmp_path / 'mlflow.db').resolve().as_posix()}"} and len(roots) == 2
