"""One pluggy ``PluginManager`` per ``Engine``: entry points first, then the built-ins."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Iterable

import attrs
import pluggy

from kdcore import hookspecs

ENTRY_POINT_GROUP = "kdcore"
DISABLE_ENV = "KDCORE_DISABLE_PLUGINS"

DEFAULT_PLUGINS = (
    "kdcore.plugins.validation",
    "kdcore.plugins.models",
    "kdcore.plugins.datasets",
    "kdcore.plugins.modes.normal",
    "kdcore.plugins.modes.autoencoder",
    "kdcore.plugins.modes.curriculum",
    "kdcore.plugins.modes.fusion",
    "kdcore.plugins.strategies.gat_softlabel",
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
    for module_name in DEFAULT_PLUGINS:
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
