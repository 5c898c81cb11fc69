"""One pluggy ``PluginManager`` per ``Engine``: entry points first, then the built-ins."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable

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


def make_plugin_manager(
    extra_plugins: Iterable[object] = (),
    *,
    load_entry_points: bool = True,
    disabled: Iterable[str] | None = None,
) -> pluggy.PluginManager:
    """Build a fresh manager: blocked names, entry points, built-ins, extras, then check.

    ``disabled`` defaults to ``KDCORE_DISABLE_PLUGINS``; entry-point names and built-in module
    names (``kdcore.plugins.modes.fusion``) can both be blocked.
    """
    pm = pluggy.PluginManager("kdcore")
    pm.add_hookspecs(hookspecs)
    for name in disabled_from_env() if disabled is None else disabled:
        pm.set_blocked(name)
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for module_name in DEFAULT_PLUGINS:
        if not pm.is_blocked(module_name):
            pm.register(importlib.import_module(module_name), name=module_name)
    for plugin in extra_plugins:
        name = plugin_name(plugin)
        if pm.has_plugin(name) or pm.is_blocked(name):
            name = f"{name}-{id(plugin):x}"
        pm.register(plugin, name=name)
    pm.check_pending()
    return pm
