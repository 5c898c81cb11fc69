"""Behaviour of the built-in modes beyond their contracts: curriculum advances, runs repeat with a seed."""

import csv

import torch

from kdcore.checkpoint import load_checkpoint
from kdcore.data.graphset import labels_of
from kdcore.errors import KdcoreError
from kdcore.plugins.modes.curriculum import CurriculumSampler

import pytest

from conftest import tiny_config


def test_curriculum_sampler_moves_from_easy_to_hard_normals():
    difficulty = torch.rand(400, generator=torch.Generator().manual_seed(1))
    normal_index = torch.arange(400)
    attack_index = torch.arange(400, 450)
    sampler = CurriculumSampler(difficulty, normal_index, attack_index, max_epochs=6, seed=0)
    means = []
    for epoch in range(6):
        chosen = sampler(epoch)
        normals = chosen[chosen < 400]
        assert len(normals) == 200, "four normals per attack"
        assert set(attack_index.tolist()) <= set(chosen.tolist()), "every attack, every epoch"
        means.append(float(difficulty[normals].mean()))
    assert all(later > earlier for earlier, later in zip(means, means[1:])), means
    assert means[0] < 0.3 and means[-1] > 0.7


def test_curriculum_redraws_the_training_set_every_epoch(engine, teacher_root):
    run = engine.build(engine.plan(tiny_config(teacher_root, mode="curriculum", max_epochs=3)))
    run.mode.prepare(run)
    sampler, epochs_drawn = run.datamodule.epoch_sampler, []

    def recording_sampler(epoch):
        epochs_drawn.append(epoch)
        return sampler(epoch)

    run.datamodule.epoch_sampler = recording_sampler
    run.mode.fit(run)
    assert epochs_drawn == [0, 1, 2]


def test_curriculum_without_a_vgae_says_what_to_train_first(engine, tmp_path):
    with pytest.raises(KdcoreError, match="curriculum mode needs a trained VGAE at .*vgae_autoencoder.pth; train it first"):
        engine.plan(tiny_config(tmp_path, mode="curriculum"))


def test_autoencoder_trains_on_normal_windows_only(engine, tmp_path):
    run = engine.build(engine.plan(tiny_config(tmp_path, mode="autoencoder")))
    labels = torch.cat([batch.y for batch in run.datamodule.train_dataloader()])
    assert len(labels) > 0 and labels.sum() == 0
    assert (labels_of(run.datamodule.train_set) == 1).any()


def test_autoencoder_threshold_is_saved_with_the_model(engine, teacher_root):
    path = teacher_root / "automotive/tiny/unsupervised/vgae/teacher/no-kd/autoencoder/models/vgae_autoencoder.pth"
    threshold = load_checkpoint(path).extra["threshold"]
    assert isinstance(threshold, float) and threshold > 0


def test_the_vgae_error_scale_is_each_features_normal_error_floored():
    from torch_geometric.data import Data

    from kdcore.plugins.modes.autoencoder import ERROR_SCALE_FLOOR, fit_error_scale, node_errors

    class Zeros:  # a mode whose model reconstructs every feature as 0: each error is the feature squared
        def outputs(self, model, batch):
            return {"recon": torch.zeros_like(batch.x)}

    x = torch.randn(2000, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([2.0, 0.5, 0.0])
    scale = fit_error_scale(Zeros(), torch.nn.Linear(1, 1), [Data(x=part) for part in x.split(500)])
    squares = (x**2).mean(0)
    assert torch.allclose(scale[:2], squares[:2]), "each feature's mean squared error on the windows given"
    assert scale[2] == pytest.approx(ERROR_SCALE_FLOOR * float(squares.mean())), "a feature that never errs is floored"
    scaled = node_errors({"recon": torch.zeros_like(x)}, x, scale)
    per_feature = ((x**2) / scale).mean(0)
    assert torch.allclose(per_feature[:2], torch.ones(2)) and torch.allclose(scaled, ((x**2) / scale).mean(-1))


def test_a_vgae_represents_a_window_by_its_most_suspicious_node():
    """What the VGAE's attack classes are fitted on: the node with the highest reconstruction error,
    its signed errors in units of each feature's normal error, then its features."""
    from torch_geometric.data import Batch, Data

    from kdcore.plugins.modes.autoencoder import AutoencoderMode, node_errors
    from kdcore.plugins.modes.normal import NormalMode

    class Zeros(AutoencoderMode):  # reconstructs every feature as 0
        def outputs(self, model, batch):
            return {"recon": torch.zeros_like(batch.x)}

    model = torch.nn.Linear(1, 1)
    model.error_scale = torch.tensor([4.0, 1.0])
    windows = [torch.tensor([[1.0, 0.0], [0.0, -3.0], [2.0, 2.0]]), torch.tensor([[-6.0, 0.0], [1.0, 1.0]])]
    batch = Batch.from_data_list([Data(x=x) for x in windows])
    embedded = Zeros().window_embeddings(model, batch)
    errors = node_errors({"recon": torch.zeros_like(batch.x)}, batch.x, model.error_scale)
    assert errors.tolist() == [0.125, 4.5, 2.5, 4.5, 0.625]
    assert embedded.tolist() == [[0.0, -3.0, 0.0, -3.0], [-3.0, 0.0, -6.0, 0.0]]
    assert AutoencoderMode.window_embedding == "top node" != NormalMode.window_embedding  # the GAT's: pooled nodes


def test_gat_probabilities_near_one_stay_apart_through_the_metrics():
    from torch_geometric.data import Data

    from kdcore.metrics import detection_metrics
    from kdcore.plugins.modes.normal import NormalMode

    class Confident(NormalMode):  # attack log-odds 17 (a normal window) and 18 (an attack): both P == 1 in float32
        def outputs(self, model, batch):
            return {"logits": torch.tensor([[0.0, 17.0], [0.0, 18.0]])}

    probabilities = Confident().attack_probabilities(torch.nn.Linear(1, 1), [Data(x=torch.zeros(1, 1))])
    assert torch.softmax(torch.tensor([[0.0, 17.0], [0.0, 18.0]]), -1)[:, 1].unique().numel() == 1, "float32 cannot tell them"
    assert probabilities[0] < probabilities[1] < 1.0
    metrics = detection_metrics(probabilities, torch.tensor([0, 1]), float(probabilities.mean()))
    assert metrics["confusion_matrix"] == [[1, 0], [0, 1]]


def test_an_agnostic_vgae_saves_the_error_scale_of_both_views(engine, teacher_root):
    checkpoint = load_checkpoint(teacher_root / "automotive/tiny/unsupervised/vgae/teacher/no-kd/autoencoder/models/vgae_autoencoder.pth")
    scale, roles = checkpoint.state_dict["error_scale"], torch.tensor(checkpoint.extra["roles_error_scale"])
    assert scale.shape == roles.shape and (scale > 0).all() and (roles > 0).all()
    assert not torch.allclose(scale, torch.ones_like(scale)), "fitted, not left at its initial ones"
    assert not torch.allclose(scale, roles), "windows judged by roles alone err differently"


def test_same_seed_same_metrics_and_weights(engine, tmp_path):
    first = engine.run(tiny_config(tmp_path / "a", mode="normal", max_epochs=2))
    second = engine.run(tiny_config(tmp_path / "b", mode="normal", max_epochs=2))
    timings = ("train_seconds", "latency_ms_per_graph")
    assert {k: v for k, v in first.metrics.items() if k not in timings} == {
        k: v for k, v in second.metrics.items() if k not in timings
    }
    a, b = load_checkpoint(first.checkpoint).state_dict, load_checkpoint(second.checkpoint).state_dict
    assert all(torch.equal(a[key], b[key]) for key in a)
    other = engine.run(tiny_config(tmp_path / "c", mode="normal", max_epochs=2, seed=7))
    c = load_checkpoint(other.checkpoint).state_dict
    assert not all(torch.equal(a[key], c[key]) for key in a)


def test_students_are_a_fraction_of_their_teachers(engine, tmp_path):
    from kdcore.data.dataset import DataInfo
    from kdcore.models import build_model

    info = DataInfo(num_node_features=15, num_ids=67)  # a real vehicle has 15-70 IDs
    for name in ("gat", "vgae"):
        model_class = engine.models.get(name)
        teacher = sum(p.numel() for p in build_model(model_class, "teacher", info).parameters())
        student = sum(p.numel() for p in build_model(model_class, "student", info).parameters())
        assert student <= 0.07 * teacher, (name, student, teacher)


def test_gradient_checkpointing_gives_the_same_gradients(engine, tmp_path):
    run = engine.build(engine.plan(tiny_config(tmp_path, mode="normal")))
    batch = next(iter(run.datamodule.train_dataloader()))
    gradients = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        run.model.zero_grad()
        run.model.gradient_checkpointing = checkpointed
        run.model.eval()  # no dropout, so both passes compute the same function
        with torch.enable_grad():
            run.mode.task_loss(run.mode.outputs(run.model, batch), batch).backward()
        gradients.append([p.grad.clone() for p in run.model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*gradients))


def test_resume_continues_from_last_checkpoint(engine, tmp_path):
    config = tiny_config(tmp_path, mode="normal", max_epochs=2, early_stopping_patience=0)
    first = engine.run(config)
    last = first.run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    resumed = engine.run(tiny_config(tmp_path, mode="normal", max_epochs=3, early_stopping_patience=0, resume=True))
    rows = list(csv.DictReader(open(resumed.run_dir / "logs" / "metrics.csv")))
    assert max(int(float(row["epoch"])) for row in rows if row["epoch"]) == 2  # epochs 0, 1, then 2 resumed
    fresh = engine.run(tiny_config(tmp_path / "fresh", mode="normal", max_epochs=3, early_stopping_patience=0))
    assert resumed.metrics["confusion_matrix"] == fresh.metrics["confusion_matrix"]
    fresh_weights = load_checkpoint(fresh.checkpoint).state_dict
    for key, value in load_checkpoint(resumed.checkpoint).state_dict.items():
        assert torch.equal(value, fresh_weights[key]), key  # the same shuffles and dropout masks after resuming


def test_runs_train_on_one_thread_by_default_and_restore_the_setting(engine, tmp_path, monkeypatch):
    from kdcore.plugins.modes.normal import NormalMode

    seen = []
    original_fit = NormalMode.fit
    monkeypatch.setattr(NormalMode, "fit", lambda self, run: (seen.append(torch.get_num_threads()), original_fit(self, run)))
    before = torch.get_num_threads()
    engine.run(tiny_config(tmp_path, mode="normal", max_steps=1))
    engine.run(tiny_config(tmp_path, mode="normal", max_steps=1, num_threads=2))
    assert seen == [1, 2]
    assert torch.get_num_threads() == before


def test_a_nan_loss_stops_training_naming_the_term_and_step(tmp_path):
    from kdcore import Engine, hookimpl
    from kdcore.errors import KdcoreError
    from kdcore.plugins.modes.normal import NormalMode

    from conftest import TinyDatasetPlugin

    class Exploding(NormalMode):
        name = "exploding"

        def task_loss(self, outputs, batch):
            loss = super().task_loss(outputs, batch)
            return loss * float("nan") if self.steps_seen == 2 else loss

        def outputs(self, model, batch):
            self.steps_seen = getattr(self, "steps_seen", -1) + 1
            return super().outputs(model, batch)

    class Plugin:
        @hookimpl
        def kdcore_register_modes(self, register):
            register(Exploding)

    engine = Engine(plugins=[TinyDatasetPlugin(), Plugin()], load_entry_points=False)
    config = tiny_config(tmp_path, mode="exploding", model="gat", max_epochs=2)
    with pytest.raises(KdcoreError, match=r"task_loss is nan at step 2 \(epoch 0\)"):
        engine.run(config)
    assert not engine.plan(config).layout.metrics.exists()


def test_gradient_clipping_reaches_the_trainer(engine, tmp_path):
    from kdcore.training import make_trainer

    run = engine.build(engine.plan(tiny_config(tmp_path, mode="normal", gradient_clip_val=0.5)))
    assert make_trainer(run, []).gradient_clip_val == 0.5


def test_the_fitted_threshold_leaves_headroom_above_the_validation_quantile_but_keeps_every_attack_it_caught():
    from kdcore.metrics import ScoreSpread, fitted_thresholds, threshold_at_fpr

    class Validation:  # the datamodule's part fitted_thresholds reads: the validation windows, in one loader
        def __init__(self, labels):
            self.val_set = type("Windows", (), {"labels": labels})()

        def loader(self, split):
            return [split]

    normal = 2.0 + 0.5 * torch.randn(400, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for probabilities, transform in ((False, lambda x: x), (True, torch.sigmoid)):
        def fitted(attacks, headroom=1.0):
            scores = transform(torch.cat([normal, torch.as_tensor(attacks, dtype=torch.float64)]))
            labels = torch.cat([torch.zeros(len(normal), dtype=torch.long), torch.ones(len(attacks), dtype=torch.long)])
            return fitted_thresholds(lambda loader: scores, Validation(labels), 0.01, "vocabulary", probabilities=probabilities,
                                     headroom=headroom), scores

        plain, scores = fitted([], headroom=0.0)
        quantile = threshold_at_fpr(scores[:len(normal)], 0.01)
        assert plain["threshold"] == quantile
        spread = ScoreSpread(**plain["score_spread"])
        for attacks in ([], [9.0, 10.0, 11.0, 0.0]):  # no attack, or every one it catches far above: the whole spread
            raised, _ = fitted(attacks)
            assert spread.margins([raised["threshold"]], quantile)[0] == pytest.approx(1.0)
        between = float(normal.quantile(0.99)) + 0.05  # attacks just above the quantile, where a full spread would lose them
        stopped, scores = fitted([between] * 20 + [10.0] * 20)
        assert stopped["threshold"] == float(scores[-40]) > quantile, "raised through the normal windows up to the first attack"


def test_shift_off_normal_moves_some_movable_nodes_of_every_window_and_labels_those_windows_attacks():
    from torch_geometric.data import Batch, Data

    from kdcore.data.graphset import shift_off_normal

    empty = torch.zeros(2, 0, dtype=torch.long)
    batch = Batch.from_data_list([Data(x=torch.randn(n, 6), edge_index=empty, y=torch.tensor([0])) for n in (3, 5, 2)])
    movable = torch.ones(batch.num_nodes, dtype=torch.bool)
    movable[8:] = False  # the last window has no movable node
    before = batch.x.clone()
    shifted = shift_off_normal(batch, 3.0, [1, 2, 3], movable)
    assert torch.equal(batch.x, before) and batch.y.tolist() == [0, 0, 0]  # the batch given is left as it was
    assert shifted.y.tolist() == [1, 1, 0], "a window with nothing to move keeps its label"
    assert torch.equal(shifted.x[:, [0, 4, 5]], before[:, [0, 4, 5]]), "only the columns given move"
    moved = (shifted.x != before).any(dim=1)
    assert not moved[~movable].any()
    assert (torch.bincount(batch.batch[moved], minlength=3)[:2] >= 1).all(), "every window with movable nodes has one moved"
    spread = before[movable][:, 1:4].std(dim=0)
    distance = ((shifted.x[moved, 1:4] - before[moved, 1:4]) / spread).norm(dim=1)
    assert torch.allclose(distance, torch.full_like(distance, 3.0), atol=1e-4), "each by the strength, in spreads"


def test_with_synthetic_attacks_a_gat_also_learns_shifted_windows_as_attacks(engine, tmp_path, monkeypatch):
    from kdcore.training import ModeModule

    run = engine.build(engine.plan(tiny_config(tmp_path, mode="normal", synthetic_attacks=3.0)))
    module = ModeModule(run.mode, run.model, run, None)
    labels = []
    original = run.mode.task_loss
    monkeypatch.setattr(run.mode, "task_loss", lambda outputs, batch: labels.append(batch.y.clone()) or original(outputs, batch))
    module.on_train_epoch_start()
    batch = next(iter(run.datamodule.train_dataloader()))
    loss = module.training_step(batch, 0)

    assert torch.isfinite(loss) and len(labels) == 2
    assert torch.equal(labels[0], batch.y) and labels[1].sum() > batch.y.sum(), "windows moved off normal become attacks"
    assert set(module._loss_sums) >= {"task_loss", "synthetic_loss"}


def test_synthetic_attacks_leave_an_autoencoder_as_it_trains(engine, tmp_path, monkeypatch):
    from kdcore.training import ModeModule

    run = engine.build(engine.plan(tiny_config(tmp_path, mode="autoencoder", synthetic_attacks=3.0)))
    module = ModeModule(run.mode, run.model, run, None)
    module.on_train_epoch_start()
    module.training_step(next(iter(run.datamodule.train_dataloader())), 0)
    assert "synthetic_loss" not in module._loss_sums, "an autoencoder learns normal traffic only"
