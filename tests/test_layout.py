"""Artifact paths, teacher auto-discovery, the plan's validate_config rules, and atomic writes."""

import logging
from pathlib import Path

import pytest

from kdcore import hookimpl, Engine
from kdcore.atomic import atomic_open
from kdcore.checkpoint import load_checkpoint
from kdcore.errors import TeacherError
from kdcore.layout import run_layout
from kdcore.plugins.modes.normal import NormalMode

from conftest import TinyDatasetPlugin, tiny_config


def test_paths_follow_the_plan(tmp_path):
    config = tiny_config(tmp_path, dataset="hcrl_sa", model_size="student", use_knowledge_distillation=True, mode="autoencoder")
    layout = run_layout(config, model="vgae", learning_type="unsupervised")
    assert layout.root == tmp_path / "automotive/hcrl_sa/unsupervised/vgae/student/with-kd/autoencoder"
    assert layout.checkpoint == layout.root / "models/vgae_autoencoder.pth"


def test_teachers_written_by_kdcore_are_where_the_plan_looks(teacher_root):
    base = Path(teacher_root) / "automotive/tiny"
    assert (base / "unsupervised/vgae/teacher/no-kd/autoencoder/models/vgae_autoencoder.pth").is_file()
    assert (base / "supervised/gat/teacher/no-kd/curriculum/models/gat_curriculum.pth").is_file()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("autoencoder", "unsupervised/vgae/teacher/no-kd/autoencoder/models/vgae_autoencoder.pth"),
        ("normal", "supervised/gat/teacher/no-kd/curriculum/models/gat_curriculum.pth"),
        ("curriculum", "supervised/gat/teacher/no-kd/curriculum/models/gat_curriculum.pth"),
    ],
)
def test_kd_finds_the_teacher_without_a_flag(engine, teacher_root, mode, expected):
    plan = engine.plan(tiny_config(teacher_root, mode=mode, model_size="student", use_knowledge_distillation=True))
    assert plan.teacher_path == Path(teacher_root) / "automotive/tiny" / expected
    assert plan.config.teacher_model_path == str(plan.teacher_path)


def test_missing_explicit_teacher(engine, tmp_path):
    missing = tmp_path / "nowhere.pth"
    config = tiny_config(tmp_path, model_size="student", use_knowledge_distillation=True, teacher_model_path=str(missing))
    with pytest.raises(TeacherError) as caught:
        engine.plan(config)
    assert str(caught.value) == f"Teacher model not found: {missing}"


def test_no_teacher_anywhere_lists_where_it_looked(engine, tmp_path):
    config = tiny_config(tmp_path, mode="autoencoder", model_size="student", use_knowledge_distillation=True)
    with pytest.raises(TeacherError, match="no teacher_model_path specified, and no teacher found at: .*vgae_autoencoder.pth"):
        engine.plan(config)


def test_teacher_of_another_model_is_refused(engine, teacher_root):
    vgae = Path(teacher_root) / "automotive/tiny/unsupervised/vgae/teacher/no-kd/autoencoder/models/vgae_autoencoder.pth"
    config = tiny_config(teacher_root, mode="normal", model_size="student", use_knowledge_distillation=True, teacher_model_path=str(vgae))
    with pytest.raises(TeacherError, match="is a 'vgae' model, but the student is 'gat'"):
        engine.plan(config)


def test_kd_with_a_teacher_sized_student_warns(engine, teacher_root, caplog):
    with caplog.at_level(logging.WARNING, logger="kdcore"):
        engine.plan(tiny_config(teacher_root, mode="normal", model_size="teacher", use_knowledge_distillation=True))
    assert "usually for students" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kdcore"):
        engine.plan(tiny_config(teacher_root, mode="normal", model_size="student", use_knowledge_distillation=True))
    assert "usually for students" not in caplog.text


def test_atomic_open_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "metrics.json"
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target, "w") as handle:
            handle.write('{"half": ')
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_open_keeps_the_old_file_until_the_new_one_is_whole(tmp_path):
    target = tmp_path / "config.toml"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as handle:
            handle.write("new but incomplete")
            raise RuntimeError("killed")
    assert target.read_text() == "old"


class FailingEvaluation(NormalMode):
    name = "failing"

    def evaluate(self, model, run):
        raise RuntimeError("killed during evaluation")


class FailingPlugin:
    @hookimpl
    def kdcore_register_modes(self, register):
        register(FailingEvaluation)


def test_an_interrupted_run_does_not_look_complete(tmp_path):
    engine = Engine(plugins=[TinyDatasetPlugin(), FailingPlugin()], load_entry_points=False)
    config = tiny_config(tmp_path, mode="normal", max_steps=1)
    layout = engine.run(config).layout
    assert layout.is_complete()

    failing = tiny_config(tmp_path, mode="failing", max_steps=1, model="gat")
    failing_layout = engine.plan(failing).layout
    # Pretend an earlier complete run left its files there; the new run must invalidate them first.
    failing_layout.root.mkdir(parents=True)
    failing_layout.metrics.write_text("{}")
    with pytest.raises(RuntimeError, match="killed during evaluation"):
        engine.run(failing)
    assert not failing_layout.metrics.exists()
    assert not failing_layout.is_complete()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


def test_the_checkpoint_records_what_rebuilds_the_model(engine, teacher_root):
    path = Path(teacher_root) / "automotive/tiny/supervised/gat/teacher/no-kd/normal/models/gat_normal.pth"
    checkpoint = load_checkpoint(path)
    assert checkpoint.config["mode"] == "normal"
    assert 0.0 < checkpoint.extra["threshold"] < 1.0  # a P(attack) fitted at target_fpr, not a fixed 0.5
    model = engine.load_model(checkpoint, path)
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in checkpoint.state_dict.values())


def test_a_non_default_strategy_gets_its_own_folder(tmp_path):
    from kdcore import DistillationStrategy

    class OtherSoftLabel(DistillationStrategy):
        name = "other"
        requires = ("logits",)

    class OtherPlugin:
        @hookimpl
        def kdcore_register_strategies(self, register):
            register(OtherSoftLabel)

    engine = Engine(plugins=[TinyDatasetPlugin(), OtherPlugin()], load_entry_points=False)
    teacher = tmp_path / "teacher.pth"
    engine.run(tiny_config(tmp_path / "t", mode="normal", max_steps=1))
    teacher.write_bytes(next((tmp_path / "t").rglob("gat_normal.pth")).read_bytes())
    default = engine.plan(tiny_config(tmp_path, model_size="student", use_knowledge_distillation=True, teacher_model_path=str(teacher)))
    other = engine.plan(tiny_config(tmp_path, model_size="student", use_knowledge_distillation=True,
                                    distillation_strategy="other", teacher_model_path=str(teacher)))
    assert default.layout.root.parent.name == "with-kd"
    assert other.layout.root.parent.name == "with-kd-other"


def test_mode_and_model_must_fit(engine, tmp_path):
    from kdcore.errors import IncompatibleError

    with pytest.raises(IncompatibleError, match="mode 'normal' trains 'gat' models, not 'vgae'"):
        engine.plan(tiny_config(tmp_path, mode="normal", model="vgae"))


def test_artifacts_are_readable_like_ordinary_files(engine, teacher_root):
    import os
    import stat

    checkpoint = teacher_root / "automotive/tiny/supervised/gat/teacher/no-kd/normal/models/gat_normal.pth"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o666 & ~mask


def test_two_runs_into_one_folder_are_refused(engine, tmp_path):
    import fcntl

    from kdcore.errors import KdcoreError

    config = tiny_config(tmp_path, mode="normal", max_steps=1)
    root = engine.plan(config).layout.root
    root.mkdir(parents=True)
    with open(root / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 12345")
        held.flush()
        with pytest.raises(KdcoreError, match=r"another kdcore run \(pid 12345\) is writing here"):
            engine.run(config)
    assert engine.run(config).layout.is_complete()  # once the holder is gone, the run proceeds
