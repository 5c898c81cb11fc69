import pytest

from kdcore import DistillationStrategy, Engine, TrainingMode, hookimpl
from kdcore.errors import DuplicateNameError, UnknownNameError
from kdcore.registry import Registry


class Named:
    def __init__(self, name):
        self.name = name


def test_duplicate_names_name_both_plugins():
    registry = Registry("mode")
    registry.add(Named("normal"), plugin="first-plugin")
    with pytest.raises(DuplicateNameError, match="'normal' is registered twice: by plugin 'first-plugin' and by plugin 'second-plugin'"):
        registry.add(Named("normal"), plugin="second-plugin")


def test_unknown_name_lists_known_names_and_the_closest():
    registry = Registry("strategy")
    for name in ("gat-softlabel", "vgae-dual-signal"):
        registry.add(Named(name), plugin="p")
    with pytest.raises(UnknownNameError, match="unknown strategy 'gat-softlable'; known: gat-softlabel, vgae-dual-signal; did you mean 'gat-softlabel'\\?"):
        registry.get("gat-softlable")


class ShadowNormal(TrainingMode):
    name = "normal"
    model = "gat"
    learning_type = "supervised"


class ShadowPlugin:
    @hookimpl
    def kdcore_register_modes(self, register):
        register(ShadowNormal)


def test_a_plugin_clashing_with_a_builtin_is_an_error_naming_both():
    with pytest.raises(DuplicateNameError) as caught:
        Engine(plugins=[ShadowPlugin()], load_entry_points=False)
    message = str(caught.value)
    assert "kdcore.plugins.modes.normal" in message and "ShadowPlugin" in message


def test_builtins_register_through_the_hooks():
    engine = Engine(load_entry_points=False)
    assert engine.modes.names() == ["autoencoder", "curriculum", "fusion", "normal"]
    assert engine.strategies.names() == ["gat-softlabel", "vgae-dual-signal"]
    assert engine.modes.owner("fusion") == "kdcore.plugins.modes.fusion"


def test_disabled_plugins_are_blocked(monkeypatch):
    monkeypatch.setenv("KDCORE_DISABLE_PLUGINS", "kdcore.plugins.modes.fusion, kdcore.plugins.strategies.gat_softlabel")
    engine = Engine(load_entry_points=False)
    assert "fusion" not in engine.modes
    assert engine.strategies.names() == ["vgae-dual-signal"]


class ExtraStrategy(DistillationStrategy):
    name = "extra"
    requires = ("logits",)


class ExtraPlugin:
    @hookimpl
    def kdcore_register_strategies(self, register):
        register(ExtraStrategy)


def test_each_engine_has_its_own_plugins():
    with_extra = Engine(plugins=[ExtraPlugin()], load_entry_points=False)
    without = Engine(load_entry_points=False)
    assert "extra" in with_extra.strategies
    assert "extra" not in without.strategies
    assert with_extra.plugin_manager is not without.plugin_manager
