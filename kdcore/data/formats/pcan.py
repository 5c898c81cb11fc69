"""``trc``: PEAK PCAN-View trace files.

Version 1.1 (what PCAN-View 4 writes; read by the text engine)::

    ;$FILEVERSION=1.1
    ;$STARTTIME=45790.7029485648
    ;   ... more ``;`` comment lines ...
         1)       198.9  Rx         01A4  8  00 00 00 00 00 00 00 27
         2)       200.6  Rx         018E  3  00 06 29
         3)       201.0  Rx         0123  4  RTR

Message number, time offset in milliseconds, type, ID (4 hex digits standard, 8 extended), DLC,
data bytes (``RTR`` for a remote frame: payload zeros). Timestamps are absolute Unix seconds:
``$STARTTIME`` (an OLE date: days since 1899-12-30, the recorder's wall clock, read as UTC — the
convention python-can follows too) plus the offset; without ``$STARTTIME`` they are the offsets in
seconds. Rows of other types are bus events, not frames, and are left out: ``Error`` rows
(error frames) are counted in ``error_frames``, others (``Warng``, ...) only passed over.

Other versions (1.0 without ``$FILEVERSION``, 1.3, 2.0, 2.1) are read with python-can's
``can.TRCReader`` (one ``can.Message`` per frame: slower); 1.2 is refused.
Detected by content: a first line starting with ``;`` and a ``$FILEVERSION`` or PCAN header.
Traces carry no labels: use an attack sidecar (``kdcore.data.formats.labels``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from kdcore.data.formats.base import CaptureFormat, TextFormat
from kdcore.data.formats.text import Lines, Problems, frame_fields, head_lines, read_head, split_rows
from kdcore.data.frames import FrameTable, RowErrors
from kdcore.errors import KdcoreError

OLE_UNIX_EPOCH_DAYS = 25569.0  # 1970-01-01 counted in days from 1899-12-30
_VERSION = re.compile(rb"^;\$FILEVERSION=(\S*)", re.MULTILINE)
_START = re.compile(rb"^;\$STARTTIME=(\S*)", re.MULTILINE)
_PYTHON_CAN_VERSIONS = ("1.0", "1.3", "2.0", "2.1")


def ole_to_unix(days: float) -> float:
    """An OLE automation date (days since 1899-12-30, as UTC) → Unix seconds."""
    return (days - OLE_UNIX_EPOCH_DAYS) * 86400.0


class PcanTrace(CaptureFormat):
    name = "trc"
    priority = 70
    description = "PEAK PCAN-View trace (.trc): v1.1 by the text engine, 1.0/1.3/2.x via python-can"
    suffixes = (".trc",)

    def sniff(self, head: bytes, path: Path) -> bool:
        lines = head_lines(head, 40)
        if not lines or not lines[0].startswith(b";"):
            return False
        header = b"\n".join(line for line in lines if line.startswith(b";"))
        return b"$FILEVERSION=" in header or b"PCAN" in header.upper()

    def read(self, path: Path, errors: RowErrors) -> FrameTable:
        version = _VERSION.search(read_head(path))
        version = version.group(1).decode(errors="replace") if version else "1.0"
        if version == "1.1":
            return _TraceV11().read(path, errors)
        if version in _PYTHON_CAN_VERSIONS:
            from kdcore.data.formats.pythoncan import read_trc

            return read_trc(path, errors)
        raise KdcoreError(
            f"{path}: PCAN trace version {version!r} is not supported (readable: 1.1, {', '.join(_PYTHON_CAN_VERSIONS)})"
        )


class _TraceV11(TextFormat):
    """The rows of a v1.1 trace; ``settings``: its start time in Unix seconds."""

    def settings(self, path: Path, head: bytes) -> float:
        match = _START.search(head)
        if match is None:
            return 0.0
        try:
            start = ole_to_unix(float(match.group(1)))
        except ValueError:
            start = math.nan
        if not math.isfinite(start):
            number = head[: match.start()].count(b"\n") + 1
            raise KdcoreError(f"{path}:{number}: $STARTTIME: not a finite number of days: {match.group(1).decode(errors='replace')!r}")
        return start

    def parse(self, lines: Lines, start_time: float, errors: RowErrors) -> FrameTable:
        rows = split_rows(lines)
        rows = rows.take(rows.field(0).first() != ord(";"))  # comment lines
        kind = rows.field(2)
        event = kind.letters() & ~(kind.equals(b"Rx") | kind.equals(b"Tx"))
        error_frames = int(kind.equals(b"Error").sum())
        rows, kind = rows.take(~event), kind.take(~event)
        problems = Problems(rows)
        problems.require(rows.count >= 5, "row", "expected 'N) offset type ID DLC data...'")
        field = rows.field(0)
        problems.require((field.length >= 2) & (field.last() == ord(")")), "message_number", "expected 'N)'", field)
        field = rows.field(1)
        offset, ok = field.floats()
        problems.require(ok, "time_offset", "not a finite number of milliseconds", field)
        problems.require(kind.equals(b"Rx") | kind.equals(b"Tx"), "type", "expected Rx or Tx", kind)
        remote = rows.field(5).equals(b"RTR")
        can_id, dlc, payload = frame_fields(rows, problems, id_at=3, dlc_at=4, data_at=5, fields=5, remote=remote)
        with np.errstate(over="ignore", invalid="ignore"):
            timestamp = start_time + offset / 1000.0
        problems.require(np.isfinite(timestamp), "time_offset", "too large for a timestamp", field)
        valid = problems.report(errors)
        extended = rows.field(3).length > 4
        table = FrameTable.from_frames(timestamp, can_id, dlc, payload, extended=extended, remote=remote, error_frames=error_frames)
        return table if valid.all() else table.take(valid)
