"""Name → plugin-provided class, with clear errors for clashes and typos."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from kdcore.errors import DuplicateNameError, UnknownNameError, unknown_name_message

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes of one kind (modes, strategies, ...) keyed by their ``name`` attribute.

    Remembers which plugin registered each name so that a clash can name both plugins.
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
            return self._items[name]
        except KeyError:
            message = unknown_name_message(self.kind, name, self._items)
            if self.failures:
                broken = "; ".join(f"{plugin} ({reason})" for plugin, reason in sorted(self.failures.items()))
                message += f"; plugins that failed to load: {broken}"
            raise UnknownNameError(message) from None

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return (self._items[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._items)
