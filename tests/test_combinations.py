"""Every mode × strategy cell either trains a step on tiny data or is refused with the right message."""

import json
import shutil

import pytest

from kdcore import Engine, hookimpl
from kdcore.errors import IncompatibleError, KdcoreError
from kdcore.plugins.validation import FUSION_KD_MESSAGE

from conftest import TinyCAN, tiny_config

MODES = ["normal", "autoencoder", "curriculum", "fusion"]
STRATEGIES = [None, "gat-softlabel", "gat-attribution", "vgae-dual-signal"]

EXPECTED = {
    ("normal", None): "trains",
    ("normal", "gat-softlabel"): "trains",
    ("normal", "gat-attribution"): "trains",
    ("normal", "vgae-dual-signal"): "strategy 'vgae-dual-signal' needs outputs z, recon that mode 'normal' does not provide",
    ("autoencoder", None): "trains",
    ("autoencoder", "gat-softlabel"): "strategy 'gat-softlabel' needs outputs logits that mode 'autoencoder' does not provide",
    ("autoencoder", "gat-attribution"):
        "strategy 'gat-attribution' needs outputs logits, node_attribution that mode 'autoencoder' does not provide",
    ("autoencoder", "vgae-dual-signal"): "trains",
    ("curriculum", None): "trains",
    ("curriculum", "gat-softlabel"): "trains",
    ("curriculum", "gat-attribution"): "trains",
    ("curriculum", "vgae-dual-signal"): "strategy 'vgae-dual-signal' needs outputs z, recon that mode 'curriculum' does not provide",
    ("fusion", None): "trains",
    ("fusion", "gat-softlabel"): FUSION_KD_MESSAGE,
    ("fusion", "gat-attribution"): FUSION_KD_MESSAGE,
    ("fusion", "vgae-dual-signal"): FUSION_KD_MESSAGE,
}


def cell_config(root, mode, strategy):
    kd = {} if strategy is None else {
        "use_knowledge_distillation": True, "distillation_strategy": strategy, "model_size": "student"
    }
    return tiny_config(root, mode=mode, max_steps=1, **kd)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cell(engine, teacher_root, tmp_path, mode, strategy):
    expected = EXPECTED[(mode, strategy)]
    root = tmp_path / "root"
    shutil.copytree(teacher_root, root)  # this cell's runs must not replace the shared teachers
    config = cell_config(root, mode, strategy)
    if expected != "trains":
        with pytest.raises(KdcoreError) as caught:
            engine.run(config)
        assert expected in str(caught.value)
        return
    result = engine.run(config)
    assert result.layout.is_complete()
    written = json.loads(result.layout.metrics.read_text())
    assert written == result.metrics
    assert written["distillation"] == ("no-kd" if strategy is None else "with-kd")
    assert written["strategy"] == strategy
    assert 0.0 <= written["accuracy"] <= 1.0 and written["windows"] > 0
    for key in ("precision", "recall", "f1", "auroc", "fpr", "per_attack_recall", "confusion_matrix",
                "params", "checkpoint_bytes", "latency_ms_per_graph"):
        assert key in written, key
    assert sum(map(sum, written["confusion_matrix"])) == written["windows"]
    assert set(written["test_sets"]) == {"test_01_dos", "test_02_fuzzy"}


def test_fusion_with_kd_is_refused_with_exactly_the_plans_message(engine, tmp_path):
    config = tiny_config(tmp_path, mode="fusion", use_knowledge_distillation=True)
    with pytest.raises(IncompatibleError) as caught:
        engine.plan(config)
    assert str(caught.value) == (
        "Knowledge distillation is not supported for fusion mode. "
        "The DQN agent uses already-distilled VGAE and GAT models."
    )


class ExplodingData(TinyCAN):
    name = "exploding"

    def load_splits(self):
        raise AssertionError("data was read before the combination was validated")


class ExplodingPlugin:
    @hookimpl
    def kdcore_register_datasets(self, register):
        register(ExplodingData)


@pytest.mark.parametrize(("mode", "strategy"), [("fusion", "gat-softlabel"), ("normal", "vgae-dual-signal"), ("autoencoder", "gat-softlabel")])
def test_refusal_comes_before_any_data_is_read(tmp_path, mode, strategy):
    engine = Engine(plugins=[ExplodingPlugin()], load_entry_points=False)
    config = tiny_config(tmp_path, mode=mode, dataset="exploding", use_knowledge_distillation=True, distillation_strategy=strategy)
    with pytest.raises(IncompatibleError):
        engine.run(config)
    assert not any(tmp_path.iterdir()), "a refused run must not write anything"


def test_compatibility_matrix_matches_the_plan(engine):
    matrix = engine.compatibility()
    allowed = {(mode, s) for mode, row in matrix.items() for s, reason in row.items() if reason is None}
    assert allowed == {
        ("normal", "no-kd"), ("normal", "gat-softlabel"), ("normal", "gat-attribution"),
        ("autoencoder", "no-kd"), ("autoencoder", "vgae-dual-signal"),
        ("curriculum", "no-kd"), ("curriculum", "gat-softlabel"), ("curriculum", "gat-attribution"),
        ("fusion", "no-kd"),
    }
    assert matrix["fusion"]["gat-softlabel"] == FUSION_KD_MESSAGE


def test_a_plugin_veto_is_collected_with_the_others(tmp_path):
    class NoNormalKD:
        @hookimpl
        def kdcore_validate_combination(self, mode, strategy, config):
            if mode.name == "normal" and strategy is not None:
                return "our lab forbids KD in normal mode"

    engine = Engine(plugins=[NoNormalKD()], load_entry_points=False)
    with pytest.raises(IncompatibleError, match="our lab forbids KD in normal mode"):
        engine.plan(tiny_config(tmp_path, mode="normal", use_knowledge_distillation=True, teacher_model_path="x"))
    assert engine.compatibility()["normal"]["gat-softlabel"] == "our lab forbids KD in normal mode"
    assert engine.compatibility()["curriculum"]["gat-softlabel"] is None


def test_kd_without_a_strategy_uses_the_modes_default(engine, teacher_root):
    plan = engine.plan(tiny_config(teacher_root, mode="autoencoder", model_size="student", use_knowledge_distillation=True))
    assert plan.strategy.name == "vgae-dual-signal"
    assert plan.config.distillation_strategy == "vgae-dual-signal"


def test_a_strategy_without_kd_is_a_contradiction(engine, tmp_path):
    with pytest.raises(IncompatibleError, match="use_knowledge_distillation is false"):
        engine.plan(tiny_config(tmp_path, mode="normal", distillation_strategy="gat-softlabel"))
