import numpy as np
import pytest

from kdcore import DistillationStrategy, Engine, TrainingMode, hookimpl
from kdcore.data.formats import read_capture
from kdcore.data.formats.base import CaptureFormat
from kdcore.data.frames import FrameTable
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
    assert engine.strategies.names() == ["gat-attribution", "gat-softlabel", "vgae-dual-signal"]
    assert engine.modes.owner("fusion") == "kdcore.plugins.modes.fusion"


def test_disabled_plugins_are_blocked(monkeypatch):
    monkeypatch.setenv("KDCORE_DISABLE_PLUGINS", "kdcore.plugins.modes.fusion, kdcore.plugins.strategies.gat_softlabel")
    engine = Engine(load_entry_points=False)
    assert "fusion" not in engine.modes
    assert engine.strategies.names() == ["gat-attribution", "vgae-dual-signal"]


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


class Missing:
    name = "late"


def test_a_lazy_entry_is_listed_unimported_and_loaded_when_used(monkeypatch):
    import sys
    import types

    from kdcore.registry import Lazy

    registry = Registry("model")
    registry.add(Lazy("late", "kdcore_lazy_probe:Missing", "A model imported late"), plugin="p")
    assert registry.names() == ["late"] and registry.description("late") == "A model imported late"
    assert "kdcore_lazy_probe" not in sys.modules
    module = types.ModuleType("kdcore_lazy_probe")
    module.Missing = Missing
    monkeypatch.setitem(sys.modules, "kdcore_lazy_probe", module)
    assert registry.get("late") is Missing


def test_builtin_models_are_registered_lazily():
    import subprocess
    import sys

    probe = "import sys; from kdcore.manager import Plugins; p = Plugins(load_entry_points=False); print(p.models.names(), 'torch' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert output == "['dqn', 'gat', 'vgae'] False"
    assert Engine(load_entry_points=False).models.get("gat").name == "gat"


class PipeSeparated(CaptureFormat):
    """A third party's format: ``t|ID|hexdata``."""

    name = "pipes"
    description = "timestamp|ID|data"
    priority = 95

    def sniff(self, head, path):
        return head.count(b"|") >= 2

    def read(self, path, errors):
        rows = [line.split("|") for line in path.read_text().split()]
        payload = np.array([list(bytes.fromhex(data).ljust(8, b"\0")) for _, _, data in rows], np.uint8)
        return FrameTable.from_frames([float(t) for t, _, _ in rows], [int(i, 16) for _, i, _ in rows],
                                      [len(d) // 2 for *_, d in rows], payload)


class FormatPlugin:
    @hookimpl
    def kdcore_register_formats(self, register):
        register(PipeSeparated)


def test_a_third_party_format_is_detected_and_listed_like_a_builtin(tmp_path):
    engine = Engine(plugins=[FormatPlugin()], load_entry_points=False)
    path = tmp_path / "drive.txt"
    path.write_text("0.5|123|0011\n0.6|7FF|22\n")
    assert engine.formats.detect(path).name == "pipes"
    table = read_capture(path, formats=engine.formats)
    assert table.can_id.tolist() == [0x123, 0x7FF] and table.dlc.tolist() == [2, 1]
    listed = {f["name"]: f["plugin"] for f in engine.describe()["formats"]}
    assert listed["pipes"].endswith("FormatPlugin") and listed["ctt"] == "kdcore.plugins.formats"
    assert "pipes" not in Engine(load_entry_points=False).formats.names()
