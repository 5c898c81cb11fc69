"""Capture formats: detection by content, reading by name, one ``FrameTable`` out."""

from __future__ import annotations

from pathlib import Path

from kdcore.data.formats.base import CaptureFormat
from kdcore.data.formats.busmaster import Busmaster
from kdcore.data.formats.candump import Candump
from kdcore.data.formats.car_hacking import CarHackingCsv, CarHackingText
from kdcore.data.formats.ctt import CttCsv
from kdcore.data.formats.labels import apply_sidecar
from kdcore.data.formats.pcan import PcanTrace
from kdcore.data.formats.vector import VectorAsc, VectorBlf
from kdcore.data.frames import FrameTable, RowErrors
from kdcore.errors import KdcoreError, unknown_name_message

SNIFF_BYTES = 4096

# Most specific first: a binary magic, then text formats with a distinctive header, then the
# row-shape sniffers (candump last: any "(t) if ID#data" line).
FORMATS: tuple[CaptureFormat, ...] = (
    VectorBlf(),
    Busmaster(),
    PcanTrace(),
    VectorAsc(),
    CttCsv(),
    CarHackingText(),
    CarHackingCsv(),
    Candump(),
)


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
    """Read one capture file into a ``FrameTable``; ``format=None`` detects it.

    An attack sidecar ``<file name>.attacks.csv`` next to the capture labels its frames (see
    ``kdcore.data.formats.labels``). A capture with no frames reads as an empty table when its
    format is named; detection refuses an empty (or blank) file, having nothing to go by.
    """
    path = Path(path)
    errors = RowErrors(path, on_bad_rows)
    if format:
        capture_format = format_by_name(format)
        if not path.is_file():
            raise KdcoreError(f"capture not found: {path}")
    else:
        if path.is_file() and not _has_content(path):
            raise KdcoreError(f"{path}: empty file: no frames, and no content to detect a capture format from")
        capture_format = detect_format(path)
    table = capture_format.read(path, errors)
    return apply_sidecar(table, path, capture_format)


def _has_content(path: Path) -> bool:
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 16):
            if chunk.strip(b" \t\r\n\x00\xef\xbb\xbf"):
                return True
    return False
