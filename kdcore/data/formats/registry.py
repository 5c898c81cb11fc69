"""The capture formats of an installation, in the order detection tries them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from kdcore.data.formats.base import CaptureFormat
from kdcore.errors import KdcoreError, unknown_name_message
from kdcore.registry import Registry

SNIFF_BYTES = 4096
SHOWN_LINES = 3  # first lines quoted when no format recognises a file


class Formats:
    """Every registered ``CaptureFormat``, one instance each, most specific first: by descending
    ``priority``, then by name. ``detect`` asks each sniffer in that order."""

    def __init__(self, registry: Registry[type[CaptureFormat]]):
        self.registry = registry
        self._formats = sorted((cls() for cls in registry), key=lambda f: (-f.priority, f.name))

    def __iter__(self) -> Iterator[CaptureFormat]:
        return iter(self._formats)

    def __len__(self) -> int:
        return len(self._formats)

    def names(self) -> list[str]:
        return [f.name for f in self._formats]

    def owner(self, name: str) -> str:
        """The plugin that registered the format."""
        return self.registry.owner(name)

    def get(self, name: str) -> CaptureFormat:
        for capture_format in self._formats:
            if capture_format.name == name:
                return capture_format
        raise KdcoreError(unknown_name_message("capture format", name, self.names()))

    def detect(self, path: str | Path) -> CaptureFormat:
        """The first format whose sniffer accepts the file's first bytes (content, not extension)."""
        path = Path(path)
        if not path.is_file():
            raise KdcoreError(f"capture not found: {path}")
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
        for capture_format in self._formats:
            if capture_format.sniff(head, path):
                return capture_format
        raise KdcoreError(
            f"{path}: not a capture in any known format (tried: {', '.join(self.names())}); it begins "
            f"{_first_lines(head)}; if it is delimited text, name its columns in a layout file and pass "
            "--layout FILE (Python: format=LayoutFormat(load_layout(FILE))); see docs/formats.md, 'Any delimited text'"
        )


def _first_lines(head: bytes) -> str:
    """The first non-blank lines of a file, quoted and shortened for a one-line message."""
    lines = [line.strip() for line in head.decode("utf-8", errors="replace").splitlines() if line.strip()]
    shown = [repr(line if len(line) <= 60 else line[:57] + "...") for line in lines[:SHOWN_LINES]]
    return " | ".join(shown) if shown else "with no readable line"
