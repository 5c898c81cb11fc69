"""Capture formats: detection by content, reading by name, one ``FrameTable`` out."""

from __future__ import annotations

from pathlib import Path

from kdcore.data.formats.base import CaptureFormat
from kdcore.data.formats.ctt import CttCsv
from kdcore.data.frames import FrameTable, RowErrors
from kdcore.errors import KdcoreError, unknown_name_message

SNIFF_BYTES = 4096

FORMATS: tuple[CaptureFormat, ...] = (CttCsv(),)


def format_by_name(name: str) -> CaptureFormat:
    for capture_format in FORMATS:
        if capture_format.name == name:
            return capture_format
    raise KdcoreError(unknown_name_message("capture format", name, [f.name for f in FORMATS]))


def detect_format(path: str | Path) -> CaptureFormat:
    """The first format whose sniffer accepts the file's first bytes (content, not extension)."""
    path = Path(path)
    if not path.is_file():
        raise KdcoreError(f"capture not found: {path}")
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    for capture_format in FORMATS:
        if capture_format.sniff(head, path):
            return capture_format
    tried = ", ".join(f.name for f in FORMATS)
    raise KdcoreError(f"{path}: not a capture in any known format (tried: {tried})")


def read_capture(path: str | Path, format: str | None = None, on_bad_rows: str = "error") -> FrameTable:
    """Read one capture file into a ``FrameTable``; ``format=None`` detects it."""
    path = Path(path)
    capture_format = format_by_name(format) if format else detect_format(path)
    errors = RowErrors(path, on_bad_rows)
    return capture_format.read(path, errors)
