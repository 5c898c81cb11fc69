"""``trc``: PEAK PCAN-View trace files.

Version 1.1 (what PCAN-View 4 writes; read vectorised here)::

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
seconds. Rows of other types (``Warng``, ``Error``, ... bus events, not frames) are left out.

Other versions (1.0 without ``$FILEVERSION``, 1.3, 2.0, 2.1) are read with python-can's
``can.TRCReader`` (one ``can.Message`` per frame: slower); 1.2 is refused.
Detected by content: a first line starting with ``;`` and a ``$FILEVERSION`` or PCAN header.
Traces carry no labels: use an attack sidecar (``kdcore.data.formats.labels``).
"""

from __future__ import annotations

import re
from pathlib import Path

import can
import numpy as np

from kdcore.data.formats.base import CaptureFormat
from kdcore.data.formats.hexparse import parse_floats
from kdcore.data.formats.textscan import Lines, RowChecks, frame_columns, head_lines, read_chunks, read_lines, tokenize
from kdcore.data.formats.vector import CountedLines, read_messages
from kdcore.data.frames import FrameTable, RowErrors
from kdcore.errors import KdcoreError

OLE_UNIX_EPOCH_DAYS = 25569.0  # 1970-01-01 counted in days from 1899-12-30
_VERSION = re.compile(rb"^;\$FILEVERSION=(\S*)", re.MULTILINE)
_START = re.compile(rb"^;\$STARTTIME=(\S*)", re.MULTILINE)
_PYTHON_CAN_VERSIONS = ("1.0", "1.3", "2.0", "2.1")
_LETTER = np.zeros(256, dtype=bool)
_LETTER[list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")] = True


def ole_to_unix(days: float) -> float:
    """An OLE automation date (days since 1899-12-30, as UTC) → Unix seconds."""
    return (days - OLE_UNIX_EPOCH_DAYS) * 86400.0


class _TrcReader(can.TRCReader):
    """python-can's TRCReader, resumable after a bad row (the header state is carried over), and
    reporting the rows it cannot split into columns (python-can logs and drops them)."""

    _STATE = ("file_version", "_start_time", "columns", "_num_columns")

    def __init__(self, lines: CountedLines, previous: _TrcReader | None = None):
        super().__init__(lines)
        self._previous = previous
        self._header_read = False

    def _extract_header(self):
        previous, self._previous = self._previous, None  # kept no longer: a chain of readers would grow per bad row
        if previous is not None:
            for name in self._STATE:
                setattr(self, name, getattr(previous, name))
            if previous._header_read:
                self._parse_cols = getattr(self, previous._parse_cols.__name__)
                self._header_read = True
                return None
        # the first reader, or the previous one failed on a header line: read (on) through the header
        first_line = super()._extract_header()
        self._header_read = True
        return first_line

    def _parse_line(self, line: str):
        if not line.strip() or line.lstrip().startswith(";"):
            return None  # the last header line of a file with no rows comes here too
        return self._parse_cols(tuple(line.split(maxsplit=self._num_columns)))


class PcanTrace(CaptureFormat):
    name = "trc"
    priority = 70
    description = "PEAK PCAN-View trace (.trc): v1.1 vectorised, 1.0/1.3/2.x via python-can"
    suffixes = (".trc",)

    def sniff(self, head: bytes, path: Path) -> bool:
        lines = head_lines(head, 40)
        if not lines or not lines[0].startswith(b";"):
            return False
        header = b"\n".join(line for line in lines if line.startswith(b";"))
        return b"$FILEVERSION=" in header or b"PCAN" in header.upper()

    def read(self, path: Path, errors: RowErrors) -> FrameTable:
        with path.open("rb") as handle:
            head = handle.read(1 << 16)
        version = _VERSION.search(head)
        version = version.group(1).decode(errors="replace") if version else "1.0"
        if version == "1.1":
            return self._read_v11(path, errors)
        if version in _PYTHON_CAN_VERSIONS:
            return read_messages(path, errors, lambda lines, previous: _TrcReader(lines, previous))
        raise KdcoreError(
            f"{path}: PCAN trace version {version!r} is not supported (readable: 1.1, {', '.join(_PYTHON_CAN_VERSIONS)})"
        )

    def _read_v11(self, path: Path, errors: RowErrors) -> FrameTable:
        lines = read_lines(path)
        header = lines.buf[: min(len(lines.buf), 1 << 16)].tobytes()
        start_time = 0.0
        if match := _START.search(header):
            days, ok = parse_floats(np.array([match.group(1)]))
            if not (ok[0] and np.isfinite(ole_to_unix(float(days[0])))):
                number = header[: match.start()].count(b"\n") + 1
                raise KdcoreError(f"{path}:{number}: $STARTTIME: not a finite number of days: {match.group(1).decode(errors='replace')!r}")
            start_time = ole_to_unix(float(days[0]))
        return read_chunks(lines, lambda chunk: self._read_v11_lines(chunk, errors, start_time), errors)

    def _read_v11_lines(self, lines: Lines, errors: RowErrors, start_time: float) -> FrameTable:
        tokens = tokenize(lines)
        tokens = tokens.take(tokens.count > 0)
        first, _ = tokens.span(0)
        tokens = tokens.take(tokens.lines.buf[first] != ord(";"))  # comment lines
        if len(tokens) == 0:
            return FrameTable.empty()
        kind, _ = tokens.column(2, 8)
        frame = (kind == b"Rx") | (kind == b"Tx")
        raw = np.ascontiguousarray(kind).view(np.uint8).reshape(len(kind), -1)
        event = ~frame & (kind != b"") & (_LETTER[raw] | (raw == 0)).all(axis=1)
        tokens = tokens.take(~event)  # Warng, Error, ...: bus events, not frames
        kind = kind[~event]
        if len(tokens) == 0:
            return FrameTable.empty()

        buf = tokens.lines.buf
        checks = RowChecks(tokens.lines)
        checks.require(tokens.count >= 5, "row", "expected 'N) offset type ID DLC data...'")
        start, length = tokens.span(0)
        number_text, _ = tokens.column(0, 16)
        checks.require((length >= 2) & (buf[start + np.maximum(length - 1, 0)] == ord(")")), "message_number", "expected 'N)'", number_text)
        offset_text, fits = tokens.column(1, 32)
        offset, ok = parse_floats(offset_text)
        checks.require(ok & fits, "time_offset", "not a finite number of milliseconds", offset_text)
        checks.require((kind == b"Rx") | (kind == b"Tx"), "type", "expected Rx or Tx", kind)
        remote = tokens.equals(5, b"RTR")
        can_id, dlc, payload = frame_columns(tokens, checks, id_at=3, dlc_at=4, data_at=5, fields=5, remote=remote)
        with np.errstate(over="ignore"):
            timestamp = start_time + offset / 1000.0
        checks.require(np.isfinite(timestamp), "time_offset", "too large for a timestamp", offset_text)
        valid = checks.report(errors)
        table = FrameTable.from_frames(timestamp, can_id, dlc, payload)
        return table if valid.all() else table.take(valid)
