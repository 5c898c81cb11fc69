"""One pluggy ``PluginManager`` per ``Engine``: entry points first, then the built-ins; and
``Plugins``, the registries of everything they register.

Nothing here imports the training stack: the built-in plugin modules are light (a model class is
registered as a ``Lazy`` reference), so listing plugins or reading a capture starts at once.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from kdcore import hookspecs
from kdcore.errors import KdcoreError
from kdcore.registry import Registry

if TYPE_CHECKING:
    from kdcore.config import RunConfig
    from kdcore.contracts import DistillationStrategy, TrainingMode
    from kdcore.data.formats.registry import Formats

ENTRY_POINT_GROUP = "kdcore"
DISABLE_ENV = "KDCORE_DISABLE_PLUGINS"

FORMATS_PLUGIN = "kdcore.plugins.formats"
DEFAULT_PLUGINS = (
    "kdcore.plugins.validation",
    FORMATS_PLUGIN,
    "kdcore.plugins.models",
    "kdcore.plugins.datasets",
    "kdcore.plugins.modes.normal",
    "kdcore.plugins.modes.autoencoder",
    "kdcore.plugins.modes.curriculum",
    "kdcore.plugins.modes.fusion",
    "kdcore.plugins.strategies.gat_softlabel",
    "kdcore.plugins.strategies.gat_attribution",
    "kdcore.plugins.strategies.vgae_dual_signal",
)


def disabled_from_env() -> set[str]:
    """Plugin names listed in ``KDCORE_DISABLE_PLUGINS=name,name``."""
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def plugin_name(plugin: object) -> str:
    """A readable name for a plugin object: its module or class path."""
    if isinstance(plugin, type) or hasattr(plugin, "__file__"):
        return getattr(plugin, "__qualname__", None) or plugin.__name__
    return f"{type(plugin).__module__}.{type(plugin).__qualname__}"


@attrs.define
class LoadedPlugins:
    """The manager, where each entry-point plugin came from, and the plugins that failed."""

    manager: pluggy.PluginManager
    distributions: dict[str, tuple[str, str]] = attrs.field(factory=dict)  # name → (project, version)
    failures: dict[str, str] = attrs.field(factory=dict)  # name → one-line reason

    def fail(self, name: str, error: BaseException) -> None:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        self.failures[name] = f"{type(error).__name__}: {reason}" if reason else type(error).__name__


def make_plugin_manager(
    extra_plugins: Iterable[object] = (),
    *,
    load_entry_points: bool = True,
    disabled: Iterable[str] | None = None,
    builtins: Iterable[str] = DEFAULT_PLUGINS,
) -> LoadedPlugins:
    """Build a fresh manager: blocked names, entry points, built-ins, extras, then check.

    ``disabled`` defaults to ``KDCORE_DISABLE_PLUGINS``; entry-point names and built-in module
    names (``kdcore.plugins.modes.fusion``) can both be blocked. A third-party plugin that fails
    to import, to register or to pass ``check_pending`` is left out and recorded in ``failures``,
    so one broken package does not break kdcore for everything else.
    """
    pm = pluggy.PluginManager("kdcore")
    pm.add_hookspecs(hookspecs)
    loaded = LoadedPlugins(pm)
    for name in disabled_from_env() if disabled is None else disabled:
        pm.set_blocked(name)
    if load_entry_points:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if pm.is_blocked(entry_point.name) or pm.has_plugin(entry_point.name):
                continue
            dist = entry_point.dist
            if dist is not None:
                loaded.distributions[entry_point.name] = (dist.metadata["Name"], dist.version)
            try:
                pm.register(entry_point.load(), name=entry_point.name)
            except Exception as error:  # noqa: BLE001 - any failure of a third-party plugin
                loaded.fail(entry_point.name, error)
    for module_name in builtins:
        if not pm.is_blocked(module_name):
            pm.register(importlib.import_module(module_name), name=module_name)
    for plugin in extra_plugins:
        name = plugin_name(plugin)
        if pm.has_plugin(name) or pm.is_blocked(name):
            name = f"{name}-{id(plugin):x}"
        pm.register(plugin, name=name)
    while True:
        try:
            pm.check_pending()
            return loaded
        except pluggy.PluginValidationError as error:
            name = pm.get_name(error.plugin)
            if name in DEFAULT_PLUGINS:
                raise
            loaded.fail(name, error)
            pm.unregister(error.plugin)


class Plugins:
    """Modes, strategies, datasets, models and capture formats, each gathered from its
    ``kdcore_register_*`` hook the first time it is asked for (so reading a capture never
    imports a mode), plus the veto hook and what ``kdcore plugins`` shows.

    :param plugins: extra plugin objects to register (after entry points and built-ins).
    :param load_entry_points: load third-party plugins from the ``kdcore`` entry-point group.
    :param disabled: plugin names to block; defaults to ``KDCORE_DISABLE_PLUGINS``.
    :param builtins: the built-in plugin modules to register (all of them by default).
    """

    def __init__(
        self, plugins: Iterable[object] = (), *, load_entry_points: bool = True, disabled: Iterable[str] | None = None,
        builtins: Iterable[str] = DEFAULT_PLUGINS,
    ):
        loaded = make_plugin_manager(plugins, load_entry_points=load_entry_points, disabled=disabled, builtins=builtins)
        self.manager = loaded.manager
        self.distributions = loaded.distributions
        self.failures = loaded.failures

    def collect(self) -> None:
        """Gather every kind now, so that a name clash or a broken hook shows at once."""
        for kind in ("modes", "strategies", "datasets", "models", "formats"):
            getattr(self, kind)

    @functools.cached_property
    def modes(self) -> Registry[type[TrainingMode]]:
        return self._collect("mode", "kdcore_register_modes")

    @functools.cached_property
    def strategies(self) -> Registry[type[DistillationStrategy]]:
        return self._collect("strategy", "kdcore_register_strategies")

    @functools.cached_property
    def datasets(self) -> Registry[type]:
        return self._collect("dataset", "kdcore_register_datasets")

    @functools.cached_property
    def models(self) -> Registry[type]:
        return self._collect("model", "kdcore_register_models")

    @functools.cached_property
    def formats(self) -> Formats:
        from kdcore.data.formats.registry import Formats

        return Formats(self._collect("capture format", "kdcore_register_formats"))

    def _collect(self, kind: str, hook_name: str) -> Registry:
        """Call each plugin's ``register`` hook with a ``register`` bound to that plugin's name."""
        registry: Registry = Registry(kind, self.failures)
        for impl in reversed(getattr(self.manager.hook, hook_name).get_hookimpls()):
            if impl.plugin_name in self.failures:
                continue
            try:
                impl.function(register=lambda item, plugin=impl.plugin_name: registry.add(item, plugin))
            except KdcoreError:
                raise  # a name clash is the user's to resolve
            except Exception as error:  # noqa: BLE001 - a broken third-party hook is reported, not fatal
                if impl.plugin_name in DEFAULT_PLUGINS:
                    raise
                self.failures[impl.plugin_name] = f"{type(error).__name__} in {hook_name}: {error}"
        return registry

    def vetoes(self, mode: TrainingMode, strategy: DistillationStrategy | None, config: RunConfig) -> list[str]:
        """Every reason any plugin gives against this combination."""
        results = self.manager.hook.kdcore_validate_combination(mode=mode, strategy=strategy, config=config)
        return [reason for reason in results if reason]

    def compatibility(self, config: RunConfig | None = None) -> dict[str, dict[str, str | None]]:
        """``{mode: {"no-kd" or strategy: None if allowed else reason}}``, from the same vetoes as a run."""
        from kdcore.config import RunConfig

        config = config or RunConfig()
        without_kd = attrs.evolve(config, use_knowledge_distillation=False)
        with_kd = attrs.evolve(config, use_knowledge_distillation=True)
        matrix: dict[str, dict[str, str | None]] = {}
        for mode_class in self.modes:
            mode = mode_class()
            row = {"no-kd": " ".join(self.vetoes(mode, None, without_kd)) or None}
            for strategy_class in self.strategies:
                row[strategy_class.name] = " ".join(self.vetoes(mode, strategy_class(), with_kd)) or None
            matrix[mode.name] = row
        return matrix

    def describe(self) -> dict[str, Any]:
        """What ``kdcore plugins --json`` prints."""
        kinds = {
            "modes": [
                {
                    "name": mode.name,
                    "kd_support": mode.kd_support.value,
                    "provides": list(mode.provides),
                    "default_strategy": mode.default_strategy,
                    "plugin": self.modes.owner(mode.name),
                }
                for mode in self.modes
            ],
            "strategies": [
                {"name": s.name, "requires": list(s.requires), "plugin": self.strategies.owner(s.name)}
                for s in self.strategies
            ],
            "datasets": [{"name": name, "plugin": self.datasets.owner(name)} for name in self.datasets.names()],
            "models": [{"name": name, "plugin": self.models.owner(name)} for name in self.models.names()],
            "formats": [{"name": f.name, "plugin": self.formats.owner(f.name)} for f in self.formats],
        }
        plugins = []
        for name, _plugin in sorted(self.manager.list_name_plugin()):
            if name in self.failures:
                continue
            if name in self.distributions:
                project, version = self.distributions[name]
                plugins.append({"name": name, "distribution": project, "version": version})
            elif name in DEFAULT_PLUGINS:
                plugins.append({"name": name, "distribution": "kdcore", "version": _own_version()})
            else:  # passed to Engine(plugins=...) by the caller
                plugins.append({"name": name, "distribution": None, "version": None})
        failed = [
            {"name": name, "distribution": self.distributions.get(name, (None, None))[0],
             "version": self.distributions.get(name, (None, None))[1], "reason": reason}
            for name, reason in sorted(self.failures.items())
        ]
        return {"plugins": plugins, "failed": failed, **kinds}


@functools.cache
def installed_formats() -> Formats:
    """The capture formats of this installation (entry points and the built-in formats,
    ``KDCORE_DISABLE_PLUGINS`` honoured), gathered once per process: what reading a capture uses
    when no ``Engine`` is given. Only the formats' built-in module is imported, not the modes'."""
    return Plugins(builtins=(FORMATS_PLUGIN,)).formats


def _own_version() -> str:
    from kdcore import __version__

    return __version__
