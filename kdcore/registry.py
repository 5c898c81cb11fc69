"""Name → plugin-provided class, with clear errors for clashes and typos."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

import attrs

from kdcore.errors import DuplicateNameError, KdcoreError, UnknownNameError, unknown_name_message

T = TypeVar("T")


@attrs.frozen
class Lazy:
    """A plugin class named by where it lives, imported when first used.

    ``register(Lazy("gat", "kdcore.models.gat:GAT"))`` lists ``gat`` without importing torch: a
    plugin whose classes need a heavy stack keeps ``kdcore plugins`` and the data commands fast.
    """

    name: str
    target: str  # "package.module:Class"
    description: str = ""

    def load(self) -> type:
        module_name, _, attribute = self.target.partition(":")
        loaded = getattr(importlib.import_module(module_name), attribute)
        if getattr(loaded, "name", None) != self.name:
            raise KdcoreError(f"{self.target} is named {getattr(loaded, 'name', None)!r}, registered as {self.name!r}")
        return loaded


class Registry(Generic[T]):
    """Classes of one kind (modes, strategies, ...) keyed by their ``name`` attribute.

    Remembers which plugin registered each name so that a clash can name both plugins. An item
    may be a ``Lazy`` reference: ``get`` imports it then; ``names`` never does.
    """

    def __init__(self, kind: str, failures: dict[str, str] | None = None):
        self.kind = kind
        self.failures = failures if failures is not None else {}  # plugins that failed to load, shared
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}

    def add(self, item: T, plugin: str) -> None:
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise DuplicateNameError(f"{self.kind} {item!r} from plugin {plugin!r} has no name")
        if name in self._items:
            raise DuplicateNameError(
                f"{self.kind} {name!r} is registered twice: by plugin {self._owners[name]!r} "
                f"and by plugin {plugin!r}"
            )
        self._items[name] = item
        self._owners[name] = plugin

    def get(self, name: str) -> T:
        try:
            item = self._items[name]
        except KeyError:
            message = unknown_name_message(self.kind, name, self._items)
            if self.failures:
                broken = "; ".join(f"{plugin} ({reason})" for plugin, reason in sorted(self.failures.items()))
                message += f"; plugins that failed to load: {broken}"
            raise UnknownNameError(message) from None
        if isinstance(item, Lazy):
            item = self._items[name] = item.load()
        return item

    def description(self, name: str) -> str:
        """The first line of the item's docstring (a ``Lazy`` item's own description, unimported)."""
        item = self._items[name]
        text = item.description if isinstance(item, Lazy) else (item.__doc__ or "")
        return text.strip().splitlines()[0] if text.strip() else ""

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        """Every item in name order (``Lazy`` ones imported)."""
        return (self.get(name) for name in self.names())

    def __len__(self) -> int:
        return len(self._items)
