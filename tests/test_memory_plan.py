"""The KD plan's memory measures: batch-size factors, periodic cleanup, and the teacher-output cache."""

import json

import attrs
import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from kdcore import memory
from kdcore.checkpoint import load_checkpoint
from kdcore.classes import AttackClasses
from kdcore.errors import ConfigError
from kdcore.memory import MemoryCleanup, kd_batch_size, load_factors
from kdcore.teacher_cache import Numbered, TeacherCache

from conftest import tiny_config

PLAN_KD_FACTORS = {
    "hcrl_ch_kd": 0.45, "hcrl_sa_kd": 0.41, "set_01_kd": 0.41,
    "set_02_kd": 0.26, "set_03_kd": 0.26, "set_04_kd": 0.26, "_default_kd": 0.38,
}


def test_shipped_factors_are_the_plans():
    factors = load_factors()
    assert {key: factors[key] for key in PLAN_KD_FACTORS} == PLAN_KD_FACTORS
    for dataset in ("hcrl_ch", "hcrl_sa", "set_01", "set_02", "set_03", "set_04", "_default"):
        assert factors[f"{dataset}_kd"] == pytest.approx(0.75 * factors[dataset], abs=0.01)


def test_kd_batch_size_uses_the_datasets_ratio_or_the_default():
    factors = load_factors()
    assert kd_batch_size(100, "hcrl_ch", factors) == 75  # 0.45 / 0.6
    assert kd_batch_size(100, "set_02", factors) == 74  # 0.26 / 0.35
    assert kd_batch_size(100, "someone_elses", factors) == 76  # 0.38 / 0.5
    assert kd_batch_size(1, "hcrl_ch", factors) == 1


def test_plan_scales_the_batch_only_with_kd_and_records_what_ran(engine, teacher_root):
    plain = engine.plan(tiny_config(teacher_root, mode="normal", model_size="student", batch_size=32))
    assert plain.config.batch_size == 32
    kd = engine.plan(tiny_config(teacher_root, mode="normal", model_size="student", batch_size=32, use_knowledge_distillation=True))
    assert kd.config.batch_size == 24  # tiny is not in the file: _default_kd / _default = 0.76
    assert kd.config.kd_batch_scaling is False  # rerunning the saved config does not scale twice
    assert engine.plan(kd.config).config.batch_size == 24
    off = engine.plan(tiny_config(teacher_root, mode="normal", model_size="student", batch_size=32,
                                  use_knowledge_distillation=True, kd_batch_scaling=False))
    assert off.config.batch_size == 32


def test_a_users_factors_file_is_used_and_checked(engine, teacher_root, tmp_path):
    path = tmp_path / "factors.json"
    path.write_text(json.dumps({"_default": 0.8, "_default_kd": 0.2, "tiny": 0.5, "tiny_kd": 0.25}))
    config = tiny_config(teacher_root, mode="normal", model_size="student", batch_size=32,
                         use_knowledge_distillation=True, batch_size_factors=str(path))
    assert engine.plan(config).config.batch_size == 16

    path.write_text('{"_default": 0.5, "_default_kd": 2}')
    with pytest.raises(ConfigError, match=r"factors.json: '_default_kd' must be a number in \(0, 1\]"):
        engine.plan(config)
    path.write_text('{"_default": 0.5,\n oops}')
    with pytest.raises(ConfigError, match=r"factors.json:2: not valid JSON") as error:
        engine.plan(config)
    assert "\n" not in str(error.value)


def test_memory_cleanup_runs_every_nth_batch(monkeypatch):
    collected = []
    monkeypatch.setattr(memory.gc, "collect", lambda: collected.append(1))
    callback = MemoryCleanup(every=20)
    for batch_idx in range(45):
        callback.on_train_batch_end(None, None, None, None, batch_idx)
    assert callback.cleanups == len(collected) == 3  # batches 0, 20 and 40


def test_training_runs_the_cleanup_callback(engine, teacher_root, monkeypatch):
    collected = []
    monkeypatch.setattr(memory.gc, "collect", lambda: collected.append(1))
    run = engine.build(engine.plan(tiny_config(teacher_root, mode="normal", model_size="student", memory_cleanup_every=2)))
    batches = len(run.datamodule.train_dataloader())
    run.mode.prepare(run)
    run.mode.fit(run)
    assert len(collected) == (batches + 1) // 2


@pytest.mark.parametrize("mode", ["autoencoder", "normal"])
def test_cached_outputs_equal_the_teachers_for_any_batch(engine, teacher_root, mode):
    """Per-node (VGAE z, recon; GAT node attribution) and per-graph (GAT logits) outputs, gathered for a shuffled batch."""
    run = engine.build(engine.plan(tiny_config(teacher_root, mode=mode, model_size="student", use_knowledge_distillation=True)))
    numbered = Numbered(run.datamodule.train_set)
    names = run.strategy.requires
    cache = TeacherCache.compute(run.teacher, run.mode, DataLoader(numbered, batch_size=7), names, torch.device("cpu"))

    torch.manual_seed(3)
    batch = next(iter(DataLoader(numbered, batch_size=13, shuffle=True)))
    expected = run.teacher.outputs(run.mode, batch, names)
    cached = cache.lookup(batch)
    for name in names:
        assert cached[name].shape == expected[name].shape
        assert torch.allclose(cached[name], expected[name], atol=1e-5)
    assert sorted(batch.graph_id.tolist()) != list(range(13))  # really shuffled


def test_cached_kd_run_runs_the_teacher_once_and_trains_the_same_student(engine, teacher_root, tmp_path, monkeypatch):
    calls = []
    from kdcore.distill import FrozenTeacher

    original = FrozenTeacher.outputs
    monkeypatch.setattr(FrozenTeacher, "outputs", lambda self, mode, batch, names=(): calls.append(batch.num_graphs) or original(self, mode, batch, names))
    # The teacher judges whole windows, cached or not, while the student sees some without their profile.
    settings = dict(mode="normal", model_size="student", use_knowledge_distillation=True, max_epochs=3, early_stopping_patience=0)

    plain = engine.run(tiny_config(teacher_root, **settings, cache_teacher_outputs=False))
    trained = load_checkpoint(plain.checkpoint)  # the cached run writes to the same folder
    weights, plain_classes = trained.state_dict, AttackClasses.from_dict(trained.extra["attack_classes"])
    plain_calls, calls[:] = list(calls), []
    for stored in (teacher_root / "cache" / "teacher").glob("*.pt"):
        stored.unlink()  # another test may have stored these outputs already
    cached = engine.run(tiny_config(teacher_root, **settings, cache_teacher_outputs=True))

    graphs = len(engine.build(engine.plan(tiny_config(teacher_root, **settings))).datamodule.train_set)
    assert sum(plain_calls) > 2 * graphs  # every epoch's batches went through the teacher
    assert sum(calls) == graphs + calls[0]  # one sample batch for the connectors, then one pass
    for key, value in load_checkpoint(cached.checkpoint).state_dict.items():
        assert torch.allclose(value, weights[key], atol=1e-5), key
    # the attack classes are fitted on the same windows: the training split's attacks too, numbered or not
    cached_classes = AttackClasses.from_dict(load_checkpoint(cached.checkpoint).extra["attack_classes"])
    assert np.allclose(cached_classes.center, plain_classes.center, atol=1e-4) and np.allclose(cached_classes.means, plain_classes.means, atol=1e-3)


def test_kd_terms_are_float32_under_bf16_autocast(engine, teacher_root):
    run = engine.build(engine.plan(tiny_config(teacher_root, mode="autoencoder", model_size="student", use_knowledge_distillation=True)))
    from kdcore.distill import Distiller

    distiller = Distiller(run.strategy, run.teacher, run.config)
    batch = next(iter(run.datamodule.train_dataloader()))
    distiller.build_connectors(run.mode, run.model, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = run.mode.outputs(run.model, batch)
        terms = distiller.loss_terms(run.mode, outputs, batch)
    assert outputs["recon"].dtype == torch.bfloat16  # the student really ran in bf16 ...
    assert {name: term.dtype for name, term in terms.items()} == {"kd_latent": torch.float32, "kd_recon": torch.float32}


def test_a_bf16_mixed_kd_run_trains_on_cpu(engine, teacher_root):
    result = engine.run(tiny_config(teacher_root, mode="normal", model_size="student", use_knowledge_distillation=True,
                                    precision="bf16-mixed", cache_teacher_outputs=True))
    assert 0.0 <= result.metrics["auroc"] <= 1.0 and result.checkpoint.is_file()


def test_stored_teacher_outputs_serve_the_next_run_and_a_damaged_file_is_rebuilt(engine, teacher_root, monkeypatch, caplog):
    calls = []
    from kdcore.distill import FrozenTeacher

    original = FrozenTeacher.outputs
    monkeypatch.setattr(FrozenTeacher, "outputs", lambda self, mode, batch, names=(): calls.append(batch.num_graphs) or original(self, mode, batch, names))
    config = tiny_config(teacher_root, mode="autoencoder", model_size="student", use_knowledge_distillation=True,
                         cache_teacher_outputs=True, seed=7)
    folder = teacher_root / "cache" / "teacher"
    for stored in folder.glob("*.pt"):
        stored.unlink()
    first = engine.run(config)
    first_weights = load_checkpoint(first.checkpoint).state_dict  # later runs write to the same folder
    first_calls, calls[:] = list(calls), []
    (stored,) = folder.glob("*.pt")

    engine.run(attrs.evolve(config, seed=8))  # another seed, same teacher and data
    assert calls == [calls[0]]  # only the sample batch that sizes the connectors
    assert sum(first_calls) > calls[0]

    stored.write_bytes(b"not a checkpoint")
    calls[:] = []
    third = engine.run(config)
    assert sum(calls) == sum(first_calls)  # recomputed ...
    assert "unreadable" in caplog.text
    assert torch.load(stored, weights_only=True)["values"].keys() == {"z", "recon"}  # ... and stored again
    for key, value in load_checkpoint(third.checkpoint).state_dict.items():
        assert torch.equal(value, first_weights[key]), key  # same seed, recomputed outputs: the same student
