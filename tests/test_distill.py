"""The teacher stays frozen and out of the student; connectors train; the plan's loss formulas hold."""

import csv

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdcore import RunConfig
from kdcore.checkpoint import load_checkpoint
from kdcore.distill import Distiller, FrozenTeacher
from kdcore.plugins.strategies.gat_attribution import GatAttribution, attribution_divergence
from kdcore.plugins.strategies.gat_softlabel import GatSoftLabel
from kdcore.plugins.strategies.vgae_dual_signal import VgaeDualSignal
from kdcore.training import ModeModule, fit_with_lightning

from conftest import tiny_config


def test_gat_softlabel_is_temperature_scaled_kl_batchmean():
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 2), torch.randn(8, 2)
    config = RunConfig(distillation_temperature=3.0)
    terms = GatSoftLabel().loss_terms({"logits": student}, {"logits": teacher}, nn.ModuleDict(), None, config)
    p_teacher = F.softmax(teacher / 3.0, dim=-1)
    manual = (p_teacher * (p_teacher.log() - F.log_softmax(student / 3.0, dim=-1))).sum() / 8 * 9.0
    assert torch.allclose(terms["kd_softlabel"], manual, atol=1e-6)
    same = GatSoftLabel().loss_terms({"logits": teacher}, {"logits": teacher}, nn.ModuleDict(), None, config)
    assert same["kd_softlabel"].abs() < 1e-6


def test_attribution_divergence_compares_where_the_two_models_look_not_how_strongly():
    graph = torch.tensor([0, 0, 0, 1, 1])
    teacher = torch.tensor([4.0, 0.1, -0.2, 0.3, 2.0])
    same_places = attribution_divergence(3.0 * teacher, teacher, graph)  # the student's log-odds on another scale
    assert torch.allclose(same_places, torch.zeros(2), atol=1e-6)
    elsewhere = attribution_divergence(torch.tensor([0.1, 4.0, -0.2, 0.3, 2.0]), teacher, graph)
    assert elsewhere[0] > 0.1 and abs(float(elsewhere[1])) < 1e-6  # only the first window looks at another node


def test_gat_attribution_adds_the_attribution_match_on_the_windows_the_teacher_calls_attacks():
    graph = torch.tensor([0, 0, 1, 1])
    teacher = {"logits": torch.tensor([[0.0, 3.0], [3.0, 0.0]]), "node_attribution": torch.tensor([2.0, 0.0, 0.0, 2.0])}
    agreeing_on_the_attack = {"logits": torch.zeros(2, 2), "node_attribution": torch.tensor([2.0, 0.0, 2.0, 0.0])}
    batch = type("Batch", (), {"batch": graph})()
    terms = GatAttribution().loss_terms(agreeing_on_the_attack, teacher, nn.ModuleDict(), batch, RunConfig())
    assert set(terms) == {"kd_softlabel", "kd_attribution"}
    assert abs(float(terms["kd_attribution"])) < 1e-6  # the normal window's disagreement does not count
    normal_only = {**teacher, "logits": torch.tensor([[3.0, 0.0], [3.0, 0.0]])}
    none = GatAttribution().loss_terms(agreeing_on_the_attack, normal_only, nn.ModuleDict(), batch, RunConfig())
    assert float(none["kd_attribution"]) == 0.0
    disagreeing = {**agreeing_on_the_attack, "node_attribution": torch.tensor([0.0, 2.0, 2.0, 0.0])}
    term = GatAttribution().loss_terms(disagreeing, teacher, nn.ModuleDict(), batch, RunConfig())["kd_attribution"]
    divergence = attribution_divergence(disagreeing["node_attribution"], teacher["node_attribution"], graph)
    assert float(divergence[0]) > 0.1 and torch.isclose(term, divergence[0] / 2)  # a mean over all the batch's windows


def test_a_training_students_node_attribution_is_differentiable_and_a_teachers_is_not(engine, teacher_root):
    config = tiny_config(teacher_root, mode="normal", model_size="student", use_knowledge_distillation=True,
                         distillation_strategy="gat-attribution")
    run = engine.build(engine.plan(config))
    batch = next(iter(run.datamodule.train_dataloader()))
    student = run.mode.requested_outputs(run.model.train(), batch, ("node_attribution",))["node_attribution"]
    assert student.shape == (batch.num_nodes,)
    student.square().sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in run.model.members[0].convs.parameters())
    teacher = run.teacher.outputs(run.mode, batch, ("node_attribution",))
    assert set(teacher) == {"logits", "member_logits", "node_attribution"} and not teacher["node_attribution"].requires_grad
    assert "node_attribution" not in run.mode.outputs(run.model, batch)  # computed only on request


def test_vgae_dual_signal_projects_only_when_dims_differ():
    strategy = VgaeDualSignal()
    assert len(strategy.build_connectors({"z": 8, "recon": 11}, {"z": 8, "recon": 11})) == 0
    connectors = strategy.build_connectors({"z": 8, "recon": 11}, {"z": 32, "recon": 11})
    projection = connectors["z_projection"]
    assert (projection.in_features, projection.out_features) == (8, 32)


def test_vgae_dual_signal_is_half_latent_half_reconstruction():
    torch.manual_seed(0)
    connectors = VgaeDualSignal().build_connectors({"z": 4}, {"z": 6})
    student = {"z": torch.randn(5, 4), "recon": torch.randn(5, 11)}
    teacher = {"z": torch.randn(5, 6), "recon": torch.randn(5, 11)}
    terms = VgaeDualSignal().loss_terms(student, teacher, connectors, None, RunConfig())
    expected_latent = 0.5 * F.mse_loss(connectors["z_projection"](student["z"]), teacher["z"])
    expected_recon = 0.5 * F.mse_loss(student["recon"], teacher["recon"])
    assert torch.allclose(terms["kd_latent"], expected_latent)
    assert torch.allclose(terms["kd_recon"], expected_recon)


def test_loss_is_alpha_kd_plus_one_minus_alpha_task():
    distiller = Distiller(GatSoftLabel(), FrozenTeacher(nn.Linear(1, 1)), RunConfig(distillation_alpha=0.7))
    mixed = distiller.mix(torch.tensor(2.0), torch.tensor(10.0))
    assert torch.isclose(mixed, torch.tensor(0.7 * 10.0 + 0.3 * 2.0))


@pytest.fixture
def student_run(engine, teacher_root):
    """A VGAE student planned with KD from the tiny teacher, ready to fit."""
    config = tiny_config(teacher_root, mode="autoencoder", model_size="student", use_knowledge_distillation=True, max_epochs=2)
    return engine, config


def test_teacher_frozen_in_eval_unchanged_and_absent_from_the_student(student_run):
    engine, config = student_run
    plan = engine.plan(config)
    teacher_checkpoint = load_checkpoint(plan.teacher_path)
    result = engine.run(config)

    student_checkpoint = load_checkpoint(result.checkpoint)
    assert student_checkpoint.model == "vgae"
    assert student_checkpoint.hparams["latent_dim"] < teacher_checkpoint.hparams["latent_dim"]
    teacher_shapes = {k: tuple(v.shape) for k, v in teacher_checkpoint.state_dict.items()}
    student_shapes = {k: tuple(v.shape) for k, v in student_checkpoint.state_dict.items()}
    assert student_shapes != teacher_shapes
    assert not any("teacher" in key or "connector" in key for key in student_checkpoint.state_dict)

    # The teacher file itself is untouched by the student's training.
    reread = load_checkpoint(plan.teacher_path)
    for key, value in teacher_checkpoint.state_dict.items():
        assert torch.equal(value, reread.state_dict[key])


def test_teacher_stays_in_eval_mode_and_connectors_train(engine, teacher_root):
    config = tiny_config(teacher_root, mode="autoencoder", model_size="student", use_knowledge_distillation=True, max_epochs=2)
    run = engine.build(engine.plan(config))
    teacher_before = {k: v.clone() for k, v in run.teacher.model.state_dict().items()}

    module = fit_with_lightning(run.mode, run)

    assert module.training  # Lightning left the student in train mode ...
    assert not run.teacher.model.training  # ... but never the teacher
    assert all(not p.requires_grad for p in run.teacher.model.parameters())
    assert not any("teacher" in key for key in module.state_dict())
    projection = module.distiller.connectors["z_projection"]
    optimizer_params = {id(p) for group in module.trainer.optimizers[0].param_groups for p in group["params"]}
    assert all(id(p) in optimizer_params for p in projection.parameters())
    for key, value in run.teacher.model.state_dict().items():
        assert torch.equal(value, teacher_before[key])

    columns = set(next(csv.DictReader(open(run.layout.logs / "metrics.csv"))))
    assert {"kd_loss", "kd_latent_loss", "kd_recon_loss", "task_loss", "train_loss"} <= columns


def test_projection_weights_change_during_training(engine, teacher_root):
    config = tiny_config(teacher_root, mode="autoencoder", model_size="student", use_knowledge_distillation=True)
    run = engine.build(engine.plan(config))
    distiller = Distiller(run.strategy, run.teacher, run.config)
    batch = next(iter(run.datamodule.train_dataloader()))
    distiller.build_connectors(run.mode, run.model, batch)
    before = distiller.connectors["z_projection"].weight.detach().clone()
    optimizer = ModeModule(run.mode, run.model, run, distiller).configure_optimizers()

    outputs = run.mode.outputs(run.model, batch)
    terms = distiller.loss_terms(run.mode, outputs, batch)
    distiller.mix(run.mode.task_loss(outputs, batch), sum(terms.values())).backward()
    optimizer.step()

    assert not torch.equal(before, distiller.connectors["z_projection"].weight)


def test_the_teacher_judges_whole_windows_while_the_student_sees_them_without_their_profile(engine, teacher_root, monkeypatch):
    from kdcore.data.preprocess import UNPROFILED

    config = tiny_config(teacher_root, mode="normal", model_size="student", use_knowledge_distillation=True, profile_dropout=1.0)
    run = engine.build(engine.plan(config))
    module = ModeModule(run.mode, run.model, run, Distiller(run.strategy, run.teacher, run.config))
    seen = {}

    def recording(name, outputs):
        def record(*args):
            batch = next(arg for arg in args if hasattr(arg, "x"))
            seen.setdefault(name, batch.x.clone())  # the first call's batch (the teacher's goes through the mode too)
            return outputs(*args)
        return record

    monkeypatch.setattr(FrozenTeacher, "outputs", recording("teacher", FrozenTeacher.outputs))
    monkeypatch.setattr(run.mode, "outputs", recording("student", run.mode.outputs))
    module.on_train_epoch_start()
    batch = next(iter(run.datamodule.train_dataloader()))
    module.training_step(batch, 0)

    assert (seen["student"][:, UNPROFILED] == 1).all()  # every window without its vehicle block (rate 1.0) ...
    assert torch.equal(seen["teacher"], batch.x) and (batch.x[:, UNPROFILED] == 0).any()  # ... judged by a teacher that sees all of it


def test_perturb_one_node_moves_one_node_of_every_window_and_leaves_the_batch_as_it_was():
    from torch_geometric.data import Batch, Data

    from kdcore.data.graphset import perturb_one_node

    empty = torch.zeros(2, 0, dtype=torch.long)
    batch = Batch.from_data_list([Data(x=torch.randn(n, 4), edge_index=empty) for n in (3, 5, 1)])
    before = batch.x.clone()
    noisy = perturb_one_node(batch, 1.0)
    assert torch.equal(batch.x, before)
    moved = (noisy.x != batch.x).any(dim=1)
    assert torch.bincount(batch.batch[moved], minlength=3).tolist() == [1, 1, 1]
    assert torch.equal(perturb_one_node(batch, 0.0).x, before)
    lone = Batch.from_data_list([Data(x=torch.randn(1, 4), edge_index=empty)])
    assert torch.equal(perturb_one_node(lone, 1.0).x, lone.x), "a lone node has no spread to move by"


def test_with_kd_noise_the_student_also_matches_its_teacher_on_perturbed_windows(engine, teacher_root, monkeypatch):
    config = tiny_config(teacher_root, mode="normal", model_size="student", use_knowledge_distillation=True, profile_dropout=0.0,
                         kd_noise=1.0)
    run = engine.build(engine.plan(config))
    module = ModeModule(run.mode, run.model, run, Distiller(run.strategy, run.teacher, run.config))
    judged = []
    original = FrozenTeacher.outputs

    def recording(self, mode, batch, names=()):
        judged.append(batch.x.clone())
        return original(self, mode, batch, names)

    monkeypatch.setattr(FrozenTeacher, "outputs", recording)
    module.on_train_epoch_start()
    batch = next(iter(run.datamodule.train_dataloader()))
    loss = module.training_step(batch, 0)

    assert torch.isfinite(loss) and len(judged) == 2  # the windows, then their perturbed copies
    assert torch.equal(judged[0], batch.x)
    moved = (judged[1] != batch.x).any(dim=1)
    assert torch.bincount(batch.batch[moved], minlength=batch.num_graphs).tolist() == [1] * batch.num_graphs


def test_perturbed_windows_are_judged_by_the_teacher_not_looked_up_in_its_cache(engine, teacher_root):
    class NoWindowCached:
        def lookup(self, batch):
            raise AssertionError("a perturbed window is never in the teacher cache")

    config = tiny_config(teacher_root, mode="autoencoder", model_size="student", use_knowledge_distillation=True)
    run = engine.build(engine.plan(config))
    distiller = Distiller(run.strategy, run.teacher, run.config)
    batch = next(iter(run.datamodule.train_dataloader()))
    distiller.build_connectors(run.mode, run.model, batch)
    distiller.cache = NoWindowCached()
    terms = distiller.loss_terms(run.mode, run.mode.outputs(run.model, batch), batch, cached=False)
    assert set(terms) == {"kd_latent", "kd_recon"} and all(torch.isfinite(value) for value in terms.values())
    with pytest.raises(AssertionError, match="never in the teacher cache"):
        distiller.loss_terms(run.mode, run.mode.outputs(run.model, batch), batch)
