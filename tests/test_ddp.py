"""Scale-out on Lightning: two CPU processes (``ddp_spawn`` on gloo) train what one process trains.

Full-batch training makes the comparison exact up to float rounding: one process sees every
training graph in one batch; each of two processes sees half and DDP averages their gradients.
Dropout is off so no random stream differs. KD runs through a strategy with a trainable
connector, so a teacher missing in a worker or unsynchronised connectors would show as a
different student.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch.nn.functional as F
from torch import nn

from kdcore import Engine, hookimpl
from kdcore.contracts import DistillationStrategy
from kdcore.errors import IncompatibleError
from kdcore.models.gat import GAT
from kdcore.plugins.strategies.gat_attribution import GatAttribution

from conftest import TinyDatasetPlugin, tiny_config


class ProjectedSoftLabel(DistillationStrategy):
    """Soft labels through a trainable logits projection; records which processes computed it."""

    name = "projected-softlabel"
    requires = ("logits",)

    def build_connectors(self, student_dims, teacher_dims):
        return nn.ModuleDict({"projection": nn.Linear(student_dims["logits"], teacher_dims["logits"])})

    def loss_terms(self, student, teacher, connectors, batch, config):
        Path(os.environ["KDCORE_TEST_PIDS"], str(os.getpid())).touch()
        projected = connectors["projection"](student["logits"])
        return {"kd_projected": F.kl_div(F.log_softmax(projected, -1), F.softmax(teacher["logits"], -1), reduction="batchmean")}


class RecordedAttribution(GatAttribution):
    """``gat-attribution`` (a double backward through the student), recording its processes."""

    name = "recorded-attribution"

    def loss_terms(self, student, teacher, connectors, batch, config):
        Path(os.environ["KDCORE_TEST_PIDS"], str(os.getpid())).touch()
        return super().loss_terms(student, teacher, connectors, batch, config)


class ProjectedSoftLabelPlugin:
    @hookimpl
    def kdcore_register_strategies(self, register):
        register(ProjectedSoftLabel)
        register(RecordedAttribution)


@pytest.fixture
def ddp_engine(monkeypatch):
    no_dropout = {size: {**settings, "dropout": 0.0} for size, settings in GAT.sizes.items()}
    monkeypatch.setattr(GAT, "sizes", no_dropout)  # the model is built here and pickled to the workers
    return Engine(plugins=[TinyDatasetPlugin(), ProjectedSoftLabelPlugin()], load_entry_points=False)


@pytest.mark.parametrize("strategy", ["projected-softlabel", "recorded-attribution"])
def test_two_processes_train_the_same_student_as_one(ddp_engine, tmp_path, monkeypatch, strategy):
    teacher = ddp_engine.run(tiny_config(tmp_path / "teacher", mode="normal", max_epochs=2))
    settings = dict(
        mode="normal", model_size="student", use_knowledge_distillation=True, distillation_strategy=strategy,
        teacher_model_path=str(teacher.checkpoint), batch_size=100_000, kd_batch_scaling=False, max_epochs=4,
        early_stopping_patience=0, accelerator="cpu",
        profile_dropout=0.0,  # a random augmentation, like the dropout taken out above, draws differently in two processes
    )
    results = {}
    for name, scale_out in {"single": {}, "ddp": {"devices": 2, "strategy": "ddp_spawn"}}.items():
        pids = tmp_path / f"pids-{name}"
        pids.mkdir()
        monkeypatch.setenv("KDCORE_TEST_PIDS", str(pids))
        results[name] = ddp_engine.run(tiny_config(tmp_path / name, **settings, **scale_out))
        results[name + "-processes"] = len(list(pids.iterdir()))

    assert results["single-processes"] == 1
    assert results["ddp-processes"] == 2  # both workers distilled from their copy of the teacher
    single, ddp = (np.load(results[name].layout.scores) for name in ("single", "ddp"))
    for key in single.files:
        if key.endswith("/score"):
            assert np.allclose(single[key], ddp[key], atol=1e-4), key
    assert abs(results["single"].metrics["auroc"] - results["ddp"].metrics["auroc"]) < 1e-3


def test_a_mode_that_trains_in_one_process_refuses_devices(ddp_engine, tmp_path):
    with pytest.raises(IncompatibleError, match="mode 'fusion' trains in one process; run it with --devices 1"):
        ddp_engine.plan(tiny_config(tmp_path, mode="fusion", model_size="student", devices=2))
