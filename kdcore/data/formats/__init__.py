"""Capture formats: detection by content, reading by name, one ``FrameTable`` out.

The formats themselves are plugins (``kdcore_register_formats``); without an explicit registry,
the installation's (``kdcore.manager.installed_formats``) are used.
"""

from __future__ import annotations

from pathlib import Path

from kdcore.data.formats.base import CaptureFormat
from kdcore.data.formats.labels import apply_sidecar
from kdcore.data.formats.registry import Formats
from kdcore.data.frames import FrameTable, RowErrors
from kdcore.errors import KdcoreError


def installed_formats() -> Formats:
    from kdcore.manager import installed_formats

    return installed_formats()


def format_by_name(name: str, formats: Formats | None = None) -> CaptureFormat:
    return (formats or installed_formats()).get(name)


def detect_format(path: str | Path, formats: Formats | None = None) -> CaptureFormat:
    """The first format whose sniffer accepts the file's first bytes (content, not extension)."""
    return (formats or installed_formats()).detect(path)


def resolve_format(path: str | Path, format: str | CaptureFormat | None = None, formats: Formats | None = None) -> CaptureFormat:
    """The format a capture is read with: the one given (a name or a format), else detected.

    Detection refuses an empty (or blank) file, having nothing to go by; a named format reads it
    as an empty table.
    """
    path = Path(path)
    if format is not None:
        capture_format = format if isinstance(format, CaptureFormat) else format_by_name(format, formats)
        if not path.is_file():
            raise KdcoreError(f"capture not found: {path}")
        return capture_format
    if path.is_file() and not _has_content(path):
        raise KdcoreError(f"{path}: empty file: no frames, and no content to detect a capture format from")
    return detect_format(path, formats)


def read_capture(
    path: str | Path, format: str | CaptureFormat | None = None, on_bad_rows: str = "error", *, formats: Formats | None = None,
    errors: RowErrors | None = None,
) -> FrameTable:
    """Read one capture file into a ``FrameTable``; ``format=None`` detects it.

    An attack sidecar ``<file name>.attacks.csv`` next to the capture labels its frames (see
    ``kdcore.data.formats.labels``). ``errors``: where bad rows go instead of a new
    ``RowErrors(path, on_bad_rows)`` — e.g. to see the first skipped row's message.
    """
    path = Path(path)
    errors = errors or RowErrors(path, on_bad_rows)
    capture_format = resolve_format(path, format, formats)
    table = capture_format.read(path, errors)
    return apply_sidecar(table, path, capture_format)


def _has_content(path: Path) -> bool:
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 16):
            if chunk.strip(b" \t\r\n\x00\xef\xbb\xbf"):
                return True
    return False
